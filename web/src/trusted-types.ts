// The one Trusted Types policy the CSP allows (`trusted-types portcullis`), created
// before anything else runs. The application has no HTML, script or script-URL sink,
// so every conversion is refused: the policy exists so that the name is taken. The CSP
// does not say `'allow-duplicates'`, so code injected later cannot create a
// `portcullis` policy of its own that would let markup through, and no other name
// (`default` included) is allowed at all.

interface TrustedTypePolicyFactoryLike {
  createPolicy(name: string, rules: Record<string, (input: string) => never>): unknown;
}

declare global {
  interface Window {
    trustedTypes?: TrustedTypePolicyFactoryLike;
  }
}

function refuse(kind: string): (input: string) => never {
  return () => {
    throw new TypeError(`Portcullis creates no ${kind} from strings`);
  };
}

function installTrustedTypesPolicy(): void {
  const factory = window.trustedTypes;
  if (!factory) return; // a browser without Trusted Types: the DOM-only code still holds
  factory.createPolicy('portcullis', {
    createHTML: refuse('HTML'),
    createScript: refuse('script'),
    createScriptURL: refuse('script URL'),
  });
}

installTrustedTypesPolicy();
export {};
