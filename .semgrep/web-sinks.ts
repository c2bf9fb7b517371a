// Test cases for web-sinks.yaml (`semgrep --test .semgrep`).
export function render(el: HTMLElement, title: string): void {
  // ruleid: portcullis.web.html-injection-sink
  el.innerHTML = `<h1>${title}</h1>`;
  // ruleid: portcullis.web.html-injection-sink
  el.outerHTML += title;
  // ruleid: portcullis.web.html-injection-sink
  el.insertAdjacentHTML('beforeend', title);
  // ruleid: portcullis.web.html-injection-sink
  document.write(title);
  // ruleid: portcullis.web.html-injection-sink
  eval(title);
  // ruleid: portcullis.web.html-injection-sink
  const f = new Function('a', title);
  // ruleid: portcullis.web.html-injection-sink
  setTimeout("refresh()", 100);
  // ok: portcullis.web.html-injection-sink
  el.innerHTML = "";
  // ok: portcullis.web.html-injection-sink
  el.textContent = title;
  // ok: portcullis.web.html-injection-sink
  el.replaceChildren(document.createTextNode(title));
  // ok: portcullis.web.html-injection-sink
  setTimeout(() => refresh(), 100);
  // ok: portcullis.web.html-injection-sink
  stream.write(title);
  // ruleid: portcullis.web.secret-in-bundle
  const key = process.env.API_KEY;
  // ok: portcullis.web.secret-in-bundle
  const mode = process.env.NODE_ENV;
}
