-- wrk script for `make bench-proxy` (bench/proxy/run.py). No request() or
-- response() hook, so wrk keeps its fast path (one pre-built request, no Lua per
-- response); only the request line and the end-of-run summary come from here.
--   WRK_METHOD  request method (default GET)
--   WRK_BODY    request body (default none)
-- Headers come from wrk's -H options.

local method = os.getenv("WRK_METHOD")
if method ~= nil and method ~= "" then
  wrk.method = method
end
local body = os.getenv("WRK_BODY")
if body ~= nil and body ~= "" then
  wrk.body = body
end

-- One line of JSON the driver picks out: counts, errors (`status` counts responses
-- with a status above 399) and latency in microseconds, p99.9 exactly as wrk's
-- histogram has it (wrk --latency prints only p50/p75/p90/p99).
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%.1f,"mean":%.1f,"max":%.1f,"stdev":%.1f,' ..
    '"p50":%.1f,"p90":%.1f,"p99":%.1f,"p999":%.1f,"p9999":%.1f}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max, latency.stdev,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency:percentile(99.99)))
end
