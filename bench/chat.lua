-- wrk: one chat completion per request; STREAM=1 in the environment asks for SSE.
-- TOKEN (bearer) is sent when set (mod_aiprov needs a session; the others ignore it).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local token = os.getenv("TOKEN")
if token and token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end
if os.getenv("STREAM") == "1" then
  wrk.body = '{"model":"bench","stream":true,"messages":[{"role":"user","content":"hi"}]}'
else
  wrk.body = '{"model":"bench","messages":[{"role":"user","content":"hi"}]}'
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT rps=%.1f p50_ms=%.2f p99_ms=%.2f requests=%d errors=%d non2xx=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, summary.requests,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
