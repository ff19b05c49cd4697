// A fast stand-in for an OpenAI-style provider, for the benchmark only:
// keep-alive, a fixed delay before each answer, usage in every answer.
//   node bench/mock.js PORT DELAY_MS
// POST /v1/chat/completions           {"stream": false} -> one JSON document
// POST /v1/chat/completions           {"stream": true}  -> 4 SSE events + usage + [DONE]
'use strict';
const http = require('node:http');
const port = Number(process.argv[2] || 18090);
const delay = Number(process.argv[3] || 0);

const usage = { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 };
const doc = JSON.stringify({
  id: 'chatcmpl-bench', object: 'chat.completion', model: 'bench',
  choices: [{ index: 0, message: { role: 'assistant', content: 'Hello from the bench' },
              finish_reason: 'stop' }],
  usage,
});
const event = (o) => `data: ${JSON.stringify(o)}\n\n`;
const chunks = ['Hel', 'lo ', 'from ', 'the bench'].map((t) =>
  event({ id: 'chatcmpl-bench', object: 'chat.completion.chunk',
          choices: [{ index: 0, delta: { content: t } }] }));
const tail = event({ id: 'chatcmpl-bench', object: 'chat.completion.chunk', choices: [], usage })
  + 'data: [DONE]\n\n';

function answer(req, res, body) {
  let stream = false;
  try { stream = JSON.parse(body || '{}').stream === true; } catch (e) { /* plain */ }
  if (stream) {
    res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' });
    for (const c of chunks) res.write(c);
    res.end(tail);
  } else {
    res.writeHead(200, { 'Content-Type': 'application/json',
                         'Content-Length': Buffer.byteLength(doc) });
    res.end(doc);
  }
}

const server = http.createServer((req, res) => {
  let body = '';
  req.on('data', (d) => { body += d; });
  req.on('end', () => {
    if (delay > 0) setTimeout(() => answer(req, res, body), delay);
    else answer(req, res, body);
  });
});
server.keepAliveTimeout = 65000;
server.listen(port, '127.0.0.1', () => console.log(`bench mock on 127.0.0.1:${port}, delay ${delay} ms`));
