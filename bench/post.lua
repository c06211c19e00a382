-- wrk script: POST a ~1 KiB JSON body signed GitHub-style.
-- Environment (set by bench/run.sh):
--   BENCH_BODY  path of the body file (sent byte for byte)
--   BENCH_SIG   "sha256=<hex hmac-sha256(secret, body)>", precomputed in the shell
--   BENCH_UNIQUE=1  also send a unique X-GitHub-Delivery per request
--                   (costs wrk some CPU; off by default)
local f = assert(io.open(assert(os.getenv("BENCH_BODY"), "BENCH_BODY unset"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-GitHub-Event"] = "push"
wrk.headers["X-Hub-Signature-256"] = assert(os.getenv("BENCH_SIG"), "BENCH_SIG unset")

if os.getenv("BENCH_UNIQUE") == "1" then
  local counter = 0
  local prefix = tostring(math.random(1, 1e9))
  function setup(thread)
    thread:set("tid", tostring(math.random(1, 1e9)))
  end
  function request()
    counter = counter + 1
    wrk.headers["X-GitHub-Delivery"] = prefix .. "-" .. (tid or "0") .. "-" .. counter
    return wrk.format()
  end
end

-- One summary line a script can parse; wrk's own output stays above it.
function done(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout + summary.errors.status
  io.write(string.format(
    "BENCH requests=%d seconds=%.3f rps=%.1f p50_ms=%.3f p99_ms=%.3f max_ms=%.3f errors=%d non2xx=%d\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    errors, summary.errors.status))
end
