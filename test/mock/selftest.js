#!/usr/bin/env node
'use strict';
/*
 * selftest.js — checks the mock provider (mock.js) on the wire: starts it, speaks to it with
 * Node's http client, and asserts the bytes, timings, status codes, headers and counters of every
 * dialect and scenario. Prints `ok - …` / `FAIL - …` per check and a closing
 * `N passed, M failed` line; exits 1 when anything failed.
 *
 *   node test/mock/selftest.js [FILTER]     (FILTER: run only checks whose name contains it)
 */

const http = require('http');
const https = require('https');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { spawn, execFileSync } = require('child_process');

const MOCK = path.join(__dirname, 'mock.js');
const FIXTURES = path.join(__dirname, '..', 'fixtures');
const FILTER = process.argv[2] || '';

// ---------------------------------------------------------------------------------------------
// Starting mocks

const children = [];

/* Start a mock; resolves {port, proc, stdout()} once it printed its line. */
function startMock(args = []) {
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, [MOCK, '--port', '0', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(proc);
    let out = '', err = '';
    const timer = setTimeout(() => reject(new Error(`mock did not start: ${err}`)), 5000);
    proc.stdout.on('data', (d) => {
      out += d;
      const m = /^listening (\d+)\n/.exec(out);
      if (m) { clearTimeout(timer); resolve({ port: Number(m[1]), proc, stdout: () => out, stderr: () => err }); }
    });
    proc.stderr.on('data', (d) => { err += d; });
    proc.on('exit', (code) => { clearTimeout(timer); reject(new Error(`mock exited (${code}): ${err}`)); });
  });
}

let PORT;

// ---------------------------------------------------------------------------------------------
// A small HTTP client that keeps what arrived and when

/* request({path, body, …}) → {status, headers, body, complete, error, tHead, chunks: [{t, s}]}.
 * complete: the response ended properly (false when the connection was cut). onData(chunk, req)
 * (with the response as third argument) may destroy the request or pause the response. */
function request(o) {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const body = o.body === undefined ? undefined : typeof o.body === 'string' ? o.body : JSON.stringify(o.body);
    const headers = { ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...(o.headers || {}) };
    const mod = o.tls ? https : http;
    const r = { status: 0, headers: {}, body: '', complete: false, error: null, tHead: -1, chunks: [], req: null };
    const bufs = [];
    let settled = false;
    const done = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      r.body = Buffer.concat(bufs).toString('utf8');
      resolve(r);
    };
    const timer = setTimeout(() => { r.error = r.error || 'client timeout'; req.destroy(); done(); }, o.timeout || 10000);
    const req = mod.request({ host: '127.0.0.1', port: o.port || PORT, method: o.method || 'POST',
      path: o.path, headers, agent: o.agent || false, ca: o.ca }, (res) => {
      r.status = res.statusCode;
      r.headers = res.headers;
      r.tHead = Date.now() - t0;
      res.on('data', (d) => {
        bufs.push(d);
        r.chunks.push({ t: Date.now() - t0, s: d.toString('latin1') });
        if (o.onData) o.onData(d, req, res);
      });
      res.on('end', () => { r.complete = true; });
      res.on('error', (e) => { r.error = e.message; });
      res.on('close', done);
    });
    r.req = req;
    req.on('error', (e) => { r.error = e.code || e.message; done(); });
    req.on('close', () => setTimeout(done, 20));
    if (body !== undefined) req.write(body);
    req.end();
  });
}

/* Milliseconds after the request when the received bytes first contained s (-1: never). */
function timeOf(r, s) {
  let acc = '';
  for (const c of r.chunks) { acc += c.s; if (acc.includes(s)) return c.t; }
  return -1;
}

/* SSE events of a body: [{event, data, raw}] (LF framing). */
function sseEvents(body) {
  return body.split('\n\n').filter((b) => b.length).map((raw) => {
    const e = { event: null, data: null, raw };
    for (const line of raw.split('\n')) {
      if (line.startsWith('event: ')) e.event = line.slice(7);
      else if (line.startsWith('data: ')) e.data = line.slice(6);
    }
    return e;
  });
}
const jsonData = (body) => sseEvents(body).filter((e) => e.data !== '[DONE]').map((e) => JSON.parse(e.data));
const ndjson = (body) => body.split('\n').filter((l) => l).map((l) => JSON.parse(l));

const msgs = (n = 1) => Array.from({ length: n }, (_, i) => ({ role: i % 2 ? 'assistant' : 'user', content: `m${i}` }));
const oai = (model, extra = {}) => ({ path: '/v1/chat/completions', body: { model, messages: msgs(2), ...extra } });
const ant = (model, extra = {}) => ({ path: '/v1/messages', headers: { 'x-api-key': 'k', 'anthropic-version': '2023-06-01' },
  body: { model, max_tokens: 100, system: 'be terse', messages: msgs(1), ...extra } });
const gem = (model, method = 'streamGenerateContent', query = '?alt=sse', extra = {}) => ({
  path: `/v1beta/models/${encodeURIComponent(model)}:${method}${query}`,
  headers: { 'x-goog-api-key': 'k' },
  body: { systemInstruction: { parts: [{ text: 'be terse' }] }, contents: [{ role: 'user', parts: [{ text: 'hi' }] }], ...extra } });
const oll = (model, extra = {}) => ({ path: '/api/chat', body: { model, messages: msgs(1), ...extra } });

const get = async (p, port) => JSON.parse((await request({ method: 'GET', path: p, port })).body);
const stats = (port) => get('/_mock/stats', port);
const reset = (port) => request({ method: 'POST', path: '/_mock/reset', port });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitFor(fn, ms = 2000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v || Date.now() > end) return v;
    await sleep(10);
  }
}

// ---------------------------------------------------------------------------------------------
// Assertions and the check registry

class Fail extends Error {}
function ok(cond, msg) { if (!cond) throw new Fail(msg); }
function eq(got, want, what) {
  const g = JSON.stringify(got), w = JSON.stringify(want);
  if (g !== w) throw new Fail(`${what}: expected ${w.slice(0, 600)}, got ${g.slice(0, 600)}`);
}

const checks = [];
function check(name, fn) { checks.push({ name, fn }); }

// The exact OpenAI chunk the mock writes.
function oaiChunk(model, delta, finish = null, usageNull = false) {
  const o = { id: 'chatcmpl-st', object: 'chat.completion.chunk', created: 1700000000, model,
    system_fingerprint: 'fp_st', choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }] };
  if (usageNull) o.usage = null;
  return `data: ${JSON.stringify(o)}\n\n`;
}
const TOKS = (n) => Array.from({ length: n }, (_, i) => (i ? ' ' : '') + 'tok' + i);
const contentOf = (body) => jsonData(body).map((c) => (c.choices && c.choices[0] && c.choices[0].delta.content) || '').join('');

// ---------------------------------------------------------------------------------------------
// OpenAI

check('openai stream: exact wire bytes (role chunk, 5 content, finish stop, [DONE])', async () => {
  const r = await request({ ...oai('gpt-4o-mini', { stream: true }) });
  eq(r.status, 200, 'status');
  ok(r.headers['content-type'].startsWith('text/event-stream'), 'content-type');
  eq(r.headers['transfer-encoding'], 'chunked', 'transfer-encoding');
  eq(r.headers['x-mock-name'], 'st', 'x-mock-name');
  const m = 'gpt-4o-mini';
  const want = oaiChunk(m, { role: 'assistant', content: '' }) +
    TOKS(5).map((t) => oaiChunk(m, { content: t })).join('') + oaiChunk(m, {}, 'stop') + 'data: [DONE]\n\n';
  eq(r.body, want, 'body');
  ok(r.complete, 'complete');
});

check('openai stream: include_usage adds a choices:[] usage chunk before [DONE], usage:null before', async () => {
  const r = await request(oai('tokens=3', { stream: true, stream_options: { include_usage: true } }));
  const ev = sseEvents(r.body);
  eq(ev[ev.length - 1].data, '[DONE]', 'last event');
  const chunks = jsonData(r.body);
  const u = chunks[chunks.length - 1];
  eq(u.choices, [], 'usage chunk choices');
  eq(u.usage, { prompt_tokens: 20, completion_tokens: 3, total_tokens: 23 }, 'usage');
  ok(chunks.slice(0, -1).every((c) => c.usage === null), 'earlier chunks carry usage:null');
  eq(chunks[chunks.length - 2].choices[0].finish_reason, 'stop', 'finish chunk before usage');
});

check('openai stream: no usage chunk unless asked; usage_always sends it anyway', async () => {
  const a = jsonData((await request(oai('tokens=2', { stream: true }))).body);
  ok(a.every((c) => !('usage' in c)), 'no usage without include_usage');
  const b = jsonData((await request(oai('tokens=2,usage_always', { stream: true }))).body);
  eq(b[b.length - 1].usage, { prompt_tokens: 20, completion_tokens: 2, total_tokens: 22 }, 'usage_always');
});

check('openai sync: chat.completion with text, model echoed, usage', async () => {
  const r = await request(oai('my-model'));
  eq(r.status, 200, 'status');
  ok(r.headers['content-length'], 'content-length');
  const j = JSON.parse(r.body);
  eq(j.object, 'chat.completion', 'object');
  eq(j.model, 'my-model', 'model');
  eq(j.choices[0].message.content, 'tok0 tok1 tok2 tok3 tok4', 'content');
  eq(j.choices[0].finish_reason, 'stop', 'finish_reason');
  eq(j.usage, { prompt_tokens: 20, completion_tokens: 5, total_tokens: 25 }, 'usage');
});

check('openai: tokens=20 gives 20 content chunks', async () => {
  const r = await request(oai('x,tokens=20', { stream: true }));
  const c = jsonData(r.body).filter((j) => j.choices[0].delta.content);
  eq(c.map((j) => j.choices[0].delta.content), TOKS(20), 'pieces');
});

check('openai: max_tokens below tokens truncates with finish_reason length (stream and sync)', async () => {
  const s = jsonData((await request(oai('tokens=5', { stream: true, max_tokens: 2 }))).body);
  eq(s.filter((c) => c.choices[0].delta.content).length, 2, 'content chunks');
  eq(s[s.length - 1].choices[0].finish_reason, 'length', 'finish');
  const j = JSON.parse((await request(oai('tokens=5', { max_completion_tokens: 3 }))).body);
  eq([j.choices[0].message.content, j.choices[0].finish_reason], ['tok0 tok1 tok2', 'length'], 'sync');
});

check('openai: any prefix ending in /chat/completions', async () => {
  for (const p of ['/openai/v1/chat/completions', '/some/prefix/v1/chat/completions?x=1']) {
    const r = await request({ ...oai('tokens=1'), path: p });
    eq(r.status, 200, p);
  }
});

check('azure: deployment path selects the model, filter chunk first, api-key logged, api-version required', async () => {
  await reset();
  const dep = 'tokens=2,drip=0';
  const p = `/openai/deployments/${encodeURIComponent(dep)}/chat/completions?api-version=2024-10-21`;
  const r = await request({ path: p, headers: { 'api-key': 'azkey' }, body: { messages: msgs(1), stream: true } });
  eq(r.status, 200, 'status');
  const c = jsonData(r.body);
  eq(c[0].choices, [], 'first chunk choices');
  ok(Array.isArray(c[0].prompt_filter_results), 'prompt_filter_results');
  eq(c[1].choices[0].delta, { role: 'assistant', content: '' }, 'role chunk second');
  eq(c[1].model, dep, 'model = deployment');
  const log = await get('/_mock/requests');
  eq(log[0].headers['api-key'], 'azkey', 'api-key logged');
  eq(log[0].path, p, 'path with query logged');
  const bad = await request({ path: `/openai/deployments/d/chat/completions`, body: { messages: msgs(1) } });
  eq(bad.status, 400, 'no api-version');
});

check('openai: tool_calls=2 streams id/name then argument fragments per index', async () => {
  const tools = ['lookup', 'fetch'].map((name) => ({ type: 'function', function: { name, parameters: {} } }));
  const r = await request(oai('tool_calls=2', { stream: true, tools }));
  const c = jsonData(r.body);
  eq(c[0].choices[0].delta, { role: 'assistant', content: null }, 'role chunk content null');
  const calls = [];
  for (const j of c) for (const tc of j.choices[0].delta.tool_calls || []) {
    if (tc.id) { eq(tc.index, calls.length, 'dense index'); calls.push({ id: tc.id, name: tc.function.name, args: tc.function.arguments }); }
    else calls[tc.index].args += tc.function.arguments;
  }
  eq(calls.map((x) => [x.id, x.name, JSON.parse(x.args)]),
    [['call_mock_0', 'lookup', { city: 'City0', n: 0 }], ['call_mock_1', 'fetch', { city: 'City1', n: 1 }]], 'calls');
  eq(c[c.length - 1].choices[0].finish_reason, 'tool_calls', 'finish');
  const s = JSON.parse((await request(oai('tool_calls=1'))).body);
  eq(s.choices[0].message.tool_calls[0].function, { name: 'get_weather', arguments: '{"city":"City0","n":0}' }, 'sync call');
});

check('openai: thinking=2 streams reasoning_content before content', async () => {
  const c = jsonData((await request(oai('thinking=2,tokens=1', { stream: true }))).body);
  eq(c.slice(1, 4).map((j) => j.choices[0].delta), [{ reasoning_content: 'think0' }, { reasoning_content: ' think1' }, { content: 'tok0' }], 'deltas');
});

// ---------------------------------------------------------------------------------------------
// Anthropic

check('anthropic stream: event order, event: lines match types, usage, no [DONE]', async () => {
  const r = await request(ant('claude-x', { stream: true }));
  eq(r.status, 200, 'status');
  const ev = sseEvents(r.body);
  eq(ev.map((e) => e.event), ['message_start', 'content_block_start', 'ping', 'content_block_delta',
    'content_block_delta', 'content_block_delta', 'content_block_delta', 'content_block_delta',
    'content_block_stop', 'message_delta', 'message_stop'], 'events');
  for (const e of ev) eq(JSON.parse(e.data).type, e.event, 'data type');
  const d = ev.map((e) => JSON.parse(e.data));
  eq(d[0].message.usage.input_tokens, 20, 'input tokens (system + 1 message)');
  eq(d[0].message.model, 'claude-x', 'model');
  eq(d.filter((x) => x.delta && x.delta.text).map((x) => x.delta.text), TOKS(5), 'text');
  eq(d[9].delta.stop_reason, 'end_turn', 'stop_reason');
  eq(d[9].usage.output_tokens, 5, 'output tokens');
  ok(!r.body.includes('[DONE]'), 'no [DONE]');
});

check('anthropic sync: Message shape', async () => {
  const j = JSON.parse((await request(ant('tokens=2'))).body);
  eq([j.type, j.role, j.content, j.stop_reason, j.usage.input_tokens, j.usage.output_tokens],
    ['message', 'assistant', [{ type: 'text', text: 'tok0 tok1' }], 'end_turn', 20, 2], 'message');
});

check('anthropic: tool_calls=2 as tool_use blocks with input_json_delta; thinking block first', async () => {
  const r = await request(ant('thinking=1,tokens=1,tool_calls=2', { stream: true, tools: [{ name: 'w', input_schema: {} }] }));
  const d = sseEvents(r.body).map((e) => JSON.parse(e.data));
  const starts = d.filter((x) => x.type === 'content_block_start').map((x) => [x.index, x.content_block.type]);
  eq(starts, [[0, 'thinking'], [1, 'text'], [2, 'tool_use'], [3, 'tool_use']], 'blocks');
  const json = (i) => d.filter((x) => x.index === i && x.delta && x.delta.type === 'input_json_delta').map((x) => x.delta.partial_json).join('');
  eq([JSON.parse(json(2)), JSON.parse(json(3))], [{ city: 'City0', n: 0 }, { city: 'City1', n: 1 }], 'inputs');
  ok(d.some((x) => x.delta && x.delta.type === 'signature_delta'), 'signature_delta');
  eq(d.find((x) => x.type === 'message_delta').delta.stop_reason, 'tool_use', 'stop_reason');
  const s = JSON.parse((await request(ant('tool_calls=1'))).body);
  eq(s.content, [{ type: 'tool_use', id: 'toolu_mock_0', name: 'get_weather', input: { city: 'City0', n: 0 } }], 'sync');
});

check('anthropic: rejects a request without max_tokens, anthropic-version or with a system role', async () => {
  const a = ant('m'); delete a.body.max_tokens;
  const r = await request(a);
  eq(r.status, 400, 'status');
  eq(JSON.parse(r.body).error.type, 'invalid_request_error', 'anthropic error shape');
  const b = ant('m'); b.headers = { 'x-api-key': 'k' };
  eq((await request(b)).status, 400, 'no anthropic-version');
  const c = ant('m'); c.body.messages = [{ role: 'system', content: 'x' }, ...msgs(1)];
  eq((await request(c)).status, 400, 'system role');
});

// ---------------------------------------------------------------------------------------------
// Gemini

check('gemini stream (alt=sse): model from URL, cumulative usage, finishReason last, no [DONE]', async () => {
  const r = await request(gem('tokens=3,drip=0'));
  eq(r.status, 200, 'status');
  ok(r.headers['content-type'].startsWith('text/event-stream'), 'content-type');
  const c = jsonData(r.body);
  eq(c.length, 3, 'chunks');
  eq(c.map((j) => j.candidates[0].content.parts[0].text), TOKS(3), 'text');
  eq(c.map((j) => j.usageMetadata.candidatesTokenCount), [1, 2, 3], 'cumulative');
  eq(c[0].usageMetadata.promptTokenCount, 20, 'prompt (systemInstruction + 1 content)');
  eq(c.map((j) => j.candidates[0].finishReason), [undefined, undefined, 'STOP'], 'finishReason');
  eq(c[0].modelVersion, 'tokens=3,drip=0', 'modelVersion');
  ok(r.body.includes('{"candidates": [{"content": {"parts": ['), 'Google spacing');
  ok(!r.body.includes('[DONE]'), 'no [DONE]');
});

check('gemini: generateContent sync and streamGenerateContent without alt=sse (JSON array)', async () => {
  const s = JSON.parse((await request(gem('tokens=2', 'generateContent', ''))).body);
  eq([s.candidates[0].content.parts, s.candidates[0].finishReason, s.usageMetadata.totalTokenCount],
    [[{ text: 'tok0 tok1' }], 'STOP', 22], 'sync');
  const r = await request(gem('tokens=2', 'streamGenerateContent', ''));
  const arr = JSON.parse(r.body);
  eq(arr.length, 2, 'array elements');
  ok(r.body.startsWith('[{') && r.body.includes('},\r\n{') && r.body.endsWith('}]'), 'array framing');
});

check('gemini: tool_calls=2 whole calls in one chunk with STOP; finish_apart', async () => {
  const c = jsonData((await request(gem('tool_calls=2'))).body);
  eq(c.length, 1, 'chunks');
  eq(c[0].candidates[0].content.parts, [{ functionCall: { name: 'get_weather', args: { city: 'City0', n: 0 } } },
    { functionCall: { name: 'get_weather', args: { city: 'City1', n: 1 } } }], 'parts');
  eq(c[0].candidates[0].finishReason, 'STOP', 'finish');
  const a = jsonData((await request(gem('tokens=1,finish_apart'))).body);
  eq(a.map((j) => [j.candidates[0].content.parts[0].text, j.candidates[0].finishReason]), [['tok0', undefined], ['', 'STOP']], 'apart');
});

// ---------------------------------------------------------------------------------------------
// Ollama

check('ollama: NDJSON stream ends with done:true and counts; stream:false answers one object', async () => {
  const r = await request(oll('llama3.2,tokens=3'));
  eq(r.headers['content-type'], 'application/x-ndjson', 'content-type');
  ok(r.body.endsWith('\n'), 'newline-terminated');
  const l = ndjson(r.body);
  eq(l.map((x) => x.message.content), [...TOKS(3), ''], 'content');
  eq(l.map((x) => x.done), [false, false, false, true], 'done');
  eq([l[3].done_reason, l[3].prompt_eval_count, l[3].eval_count], ['stop', 10, 3], 'final');
  const s = JSON.parse((await request(oll('tokens=2', { stream: false }))).body);
  eq([s.message.content, s.done, s.eval_count], ['tok0 tok1', true, 2], 'sync');
  const t = ndjson((await request(oll('tool_calls=2'))).body);
  eq(t[0].message.tool_calls.map((x) => x.function), [{ index: 0, name: 'get_weather', arguments: { city: 'City0', n: 0 } },
    { index: 1, name: 'get_weather', arguments: { city: 'City1', n: 1 } }], 'tool calls');
});

// ---------------------------------------------------------------------------------------------
// Fixture replay

const fixtureFiles = fs.readdirSync(FIXTURES)
  .filter((f) => !f.endsWith('.source.txt') && fs.statSync(path.join(FIXTURES, f)).isFile()).sort();
for (const f of fixtureFiles) {
  check(`fixture=${f} replays the file verbatim`, async () => {
    const want = fs.readFileSync(path.join(FIXTURES, f), 'utf8');
    const r = await request(oai(`fixture=${f}`, { stream: f.endsWith('.sse') }));
    eq(r.status, 200, 'status');
    ok(r.body === want, `body differs (${r.body.length} vs ${want.length} bytes)`);
    const type = f.endsWith('.sse') ? 'text/event-stream' : f.endsWith('.ndjson') ? 'application/x-ndjson' : 'application/json';
    ok(r.headers['content-type'].startsWith(type), `content-type ${r.headers['content-type']}`);
  });
}

check('fixture with status=429 sends the fixture as the error body; drip paces frames', async () => {
  const r = await request(gem('fixture=gemini_error_429.json,status=429,retry_after=34', 'generateContent', ''));
  eq([r.status, r.headers['retry-after']], [429, '34'], 'status, Retry-After');
  eq(r.body, fs.readFileSync(path.join(FIXTURES, 'gemini_error_429.json'), 'utf8'), 'body');
  const d = await request(oai('fixture=anthropic_stream_text.sse,drip=20'));
  ok(d.chunks[d.chunks.length - 1].t >= 8 * 20 - 10, `paced (${d.chunks[d.chunks.length - 1].t} ms)`);
  eq(d.body, fs.readFileSync(path.join(FIXTURES, 'anthropic_stream_text.sse'), 'utf8'), 'body');
  eq((await request(oai('fixture=nope.sse'))).status, 404, 'missing fixture');
});

// ---------------------------------------------------------------------------------------------
// Timing scenarios

check('drip=40: every event after the first waits 40 ms', async () => {
  // Lower bounds from the request's start only: a busy client may read two events at once.
  const r = await request(oai('tokens=3,drip=40', { stream: true }));
  const t = ['"role"', 'tok0', ' tok1', ' tok2', '"stop"', '[DONE]'].map((s) => timeOf(r, s));
  for (let i = 1; i < t.length; i++) ok(t[i] >= 40 * i - 2, `event ${i} too early: ${t.join(',')}`);
  ok(r.complete && r.body.endsWith('data: [DONE]\n\n'), 'complete');
});

check('stall_head=300: the head waits 300 ms (errors too)', async () => {
  const r = await request(oai('stall_head=300', { stream: true }));
  ok(r.tHead >= 290, `head at ${r.tHead} ms`);
  const e = await request(oai('stall_head=200,status=500'));
  ok(e.tHead >= 190 && e.status === 500, `error head at ${e.tHead} ms`);
});

check('stall_mid=500,after=2: silence after the 2nd content event', async () => {
  const r = await request(oai('tokens=4,stall_mid=500,after=2', { stream: true }));
  const a = timeOf(r, ' tok1'), b = timeOf(r, ' tok2');
  ok(r.tHead < 400 && a < 400, `early part late (${a} ms)`);
  ok(b >= 498, `tok2 at ${b} ms`);
  ok(r.body.endsWith('data: [DONE]\n\n') && r.complete, 'stream then completes');
});

check('role_then_stall=500: role chunk, silence, then the rest', async () => {
  const r = await request(oai('role_then_stall=500', { stream: true }));
  const a = timeOf(r, '"role"'), b = timeOf(r, 'tok0');
  ok(a < 400 && b >= 498, `role ${a} ms, tok0 ${b} ms`);
  ok(r.body.endsWith('data: [DONE]\n\n'), 'completes');
});

check('slow_ttft=500,tps=20: head and role at once, first token at 500 ms, then 50 ms apart', async () => {
  const r = await request(oai('slow_ttft=500,tps=20,tokens=5', { stream: true }));
  const role = timeOf(r, '"role"'), first = timeOf(r, 'tok0'), last = timeOf(r, ' tok4');
  ok(role < 400, `role at ${role}`);
  ok(first >= 498, `first token at ${first}`);
  ok(last >= 500 + 4 * 50 - 4, `last token at ${last} ms`);
  const s = await request(oai('slow_ttft=200,tps=20,tokens=4'));
  ok(s.tHead >= 390, `sync waits ttft + 4/20 s: ${s.tHead}`);
});

// ---------------------------------------------------------------------------------------------
// Faults

check('drop_after=2: socket destroyed after 2 content events, no [DONE], counted as dropped', async () => {
  await reset();
  const r = await request(oai('drop_after=2', { stream: true }));
  ok(!r.complete, 'response must not complete');
  ok(r.body.includes('tok0') && r.body.includes(' tok1') && !r.body.includes(' tok2'), `body: ${r.body.slice(-200)}`);
  ok(!r.body.includes('[DONE]'), 'no [DONE]');
  const s = await waitFor(async () => { const s = await stats(); return s.dropped === 1 && s; });
  ok(s && s.aborted === 0 && s.active === 0, `stats ${JSON.stringify(s)}`);
});

check('drop_after and role_then_drop on sync answers: half the body, then the drop', async () => {
  const r = await request(oai('drop_after=1'));
  ok(!r.complete && r.status === 200 && r.body.length > 0, `complete=${r.complete} len=${r.body.length}`);
  ok(Number(r.headers['content-length']) > r.body.length, 'less than content-length');
});

check('role_then_drop: exactly the role chunk, then the socket dies', async () => {
  const r = await request(oai('m,role_then_drop', { stream: true }));
  eq(r.body, oaiChunk('m,role_then_drop', { role: 'assistant', content: '' }), 'body');
  ok(!r.complete, 'incomplete');
  const a = await request(ant('role_then_drop', { stream: true }));
  eq(sseEvents(a.body).map((e) => e.event), ['message_start', 'content_block_start', 'ping'], 'anthropic preamble');
  ok(!a.complete, 'anthropic incomplete');
});

check('drop_head: no response at all; rst: the drop is a reset', async () => {
  const r = await request(oai('drop_head', { stream: true }));
  ok(r.status === 0 && r.error, `status ${r.status} error ${r.error}`);
  const s = await request(oai('drop_after=1,rst', { stream: true }));
  ok(!s.complete && s.body.includes('tok0'), 'rst drop');
});

check('malformed_after=1: one bad frame after tok0, then the stream goes on; malformed_close ends it', async () => {
  const r = await request(oai('m,malformed_after=1', { stream: true }));
  const m = 'm,malformed_after=1';
  ok(r.body.includes(oaiChunk(m, { content: 'tok0' }) + 'data: {not json\n\n' + oaiChunk(m, { content: ' tok1' })), 'bad frame in place');
  ok(r.body.endsWith('data: [DONE]\n\n') && r.complete, 'continues to [DONE]');
  const c = await request(oai('malformed_after=1,malformed_close', { stream: true }));
  ok(c.body.endsWith('data: {not json\n\n') && c.complete, 'closed cleanly after the bad frame');
  const s = await request(oai('malformed_after=1'));
  eq([s.status, s.body], [200, '{not json'], 'sync malformed');
});

check('no_done: clean HTTP end without terminator or finish, each dialect', async () => {
  const o = await request(oai('no_done', { stream: true, stream_options: { include_usage: true } }));
  ok(o.complete && !o.body.includes('[DONE]') && !o.body.includes('"finish_reason":"stop"') && !o.body.includes('"usage":{'), 'openai');
  eq(contentOf(o.body), 'tok0 tok1 tok2 tok3 tok4', 'openai content');
  const a = await request(ant('no_done', { stream: true }));
  const ae = sseEvents(a.body).map((e) => e.event);
  ok(a.complete && !ae.includes('message_stop') && !ae.includes('message_delta'), `anthropic ${ae}`);
  const g = await request(gem('no_done'));
  ok(g.complete && !g.body.includes('finishReason') && jsonData(g.body).length === 5, 'gemini');
  const l = await request(oll('no_done'));
  ok(l.complete && ndjson(l.body).every((x) => x.done === false), 'ollama');
});

check('error_event_after=2: the dialect\'s own error event, then a clean end', async () => {
  const o = await request(oai('m,error_event_after=2', { stream: true }));
  const oe = sseEvents(o.body);
  eq(oe.length, 4, 'openai events: role, 2 content, error');
  eq(JSON.parse(oe[3].data).error.code, 'mock_midstream_error', 'openai error event');
  ok(o.complete && !o.body.includes('[DONE]'), 'openai: clean end, no [DONE]');
  const v = await request(oai('error_event_after=1,done_after_error', { stream: true }));
  ok(v.body.endsWith('"code":"mock_midstream_error"}}\n\ndata: [DONE]\n\n'), 'done_after_error');
  const a = await request(ant('error_event_after=2', { stream: true }));
  const ae = sseEvents(a.body);
  eq(ae[ae.length - 1].event, 'error', 'anthropic event: error last');
  eq(JSON.parse(ae[ae.length - 1].data).error.type, 'overloaded_error', 'overloaded_error');
  eq(ae.filter((e) => e.event === 'content_block_delta').length, 2, 'after 2 deltas');
  const g = await request(gem('error_event_after=1'));
  const gl = jsonData(g.body);
  eq([gl.length, gl[1].error.status], [2, 'UNAVAILABLE'], 'gemini');
  const l = ndjson((await request(oll('error_event_after=1'))).body);
  eq(l.length, 2, 'ollama lines');
  ok(typeof l[1].error === 'string', 'ollama error line');
  const f = sseEvents((await request(ant('error_event_first', { stream: true }))).body);
  eq(f.map((e) => e.event), ['error'], 'error_event_first');
  const s = await request(ant('error_event_after=1'));
  eq([s.status, JSON.parse(s.body).error.type], [529, 'overloaded_error'], 'sync: error status');
});

check('status=429,retry_after=2: status, Retry-After, OpenAI error body (stream request too)', async () => {
  const r = await request(oai('status=429,retry_after=2', { stream: true }));
  eq(r.status, 429, 'status');
  eq(r.headers['retry-after'], '2', 'Retry-After');
  ok(r.headers['content-type'].startsWith('application/json'), 'JSON, not SSE');
  const e = JSON.parse(r.body).error;
  ok(e && typeof e.message === 'string' && 'type' in e && 'param' in e && 'code' in e, 'openai shape');
  const f = await request(oai('status=503,retry_after=0.5,retry_after_ms=500,should_retry=false'));
  eq([f.status, f.headers['retry-after'], f.headers['retry-after-ms'], f.headers['x-should-retry']], [503, '0.5', '500', 'false'], 'headers');
});

check('retry_after_date: an HTTP-date Retry-After about retry_after seconds ahead', async () => {
  const r = await request(oai('status=429,retry_after_date,retry_after=2'));
  const h = r.headers['retry-after'];
  ok(/^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$/.test(h), `format: ${h}`);
  const secs = (Date.parse(h) - Date.now()) / 1000;
  ok(secs > 1 && secs <= 4, `${secs} s ahead`);
});

check('error shapes: openai, flat, text, anthropic, gemini, ollama; defaults follow the dialect', async () => {
  const body = async (spec) => { const r = await request(spec); return [r.status, r.headers['content-type'], r.body]; };
  let [s, t, b] = await body(oai('status=400,error_shape=flat'));
  eq([s, JSON.parse(b).object, JSON.parse(b).code], [400, 'error', 400], 'flat');
  [s, t, b] = await body(oai('status=502,error_shape=text'));
  ok(s === 502 && t.startsWith('text/plain') && b.startsWith('mock: HTTP 502'), 'text');
  [s, t, b] = await body(oai('status=429,error_shape=anthropic'));
  eq([JSON.parse(b).type, JSON.parse(b).error.type], ['error', 'rate_limit_error'], 'anthropic shape');
  [s, t, b] = await body(ant('status=529', { stream: true }));
  eq([s, JSON.parse(b).error.type], [529, 'overloaded_error'], 'anthropic default');
  [s, t, b] = await body(gem('status=429,retry_after=2'));
  const g = JSON.parse(b).error;
  eq([s, g.code, g.status, g.details[0].retryDelay], [429, 429, 'RESOURCE_EXHAUSTED', '2s'], 'gemini default');
  [s, t, b] = await body(oll('status=404'));
  eq([s, typeof JSON.parse(b).error], [404, 'string'], 'ollama default');
  [s, t, b] = await body(oai('status=500,error_shape=gemini'));
  eq(JSON.parse(b).error.status, 'INTERNAL', 'gemini shape on openai path');
});

check('huge=100000: sync content of exactly 100000 bytes; stream chunks totalling 100000', async () => {
  const j = JSON.parse((await request(oai('huge=100000'))).body);
  const text = j.choices[0].message.content;
  eq(text.length, 100000, 'sync length');
  ok(text.startsWith('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/ABC'), 'pattern');
  const r = await request(oai('huge=100000', { stream: true }));
  const parts = jsonData(r.body).map((c) => c.choices[0].delta.content).filter((x) => x);
  eq([parts.join('').length, parts.length], [100000, 98], 'stream total, chunks of 1024');
  eq(parts.join(''), text, 'same text');
});

check('backpressure: a client that stops reading a huge stream still gets every byte later', async () => {
  let paused = false;
  const r = await request({ ...oai('huge=4000000', { stream: true }), onData: (d, req, res) => {
    if (paused) return;
    paused = true;
    res.pause();
    setTimeout(() => res.resume(), 300);
  } });
  ok(r.complete && r.body.endsWith('data: [DONE]\n\n'), 'complete');
  eq(jsonData(r.body).map((c) => (c.choices[0] && c.choices[0].delta.content) || '').join('').length, 4000000, 'bytes');
  ok(r.chunks[r.chunks.length - 1].t >= 300, 'really paused');
});

check('fail_first=2,key=a: two 503s then success; key=b counts apart; faults can be the failure', async () => {
  await reset();
  const st = [];
  for (let i = 0; i < 3; i++) st.push((await request(oai('fail_first=2,key=a'))).status);
  eq(st, [503, 503, 200], 'key=a');
  eq((await request(oai('fail_first=2,key=b'))).status, 503, 'key=b independent');
  const a = await request(oai('fail_first=1,role_then_drop,key=c', { stream: true }));
  const b = await request(oai('fail_first=1,role_then_drop,key=c', { stream: true }));
  ok(!a.complete && b.complete && b.body.endsWith('data: [DONE]\n\n'), 'drop first, then clean');
  const c = await request(oai('fail_first=1,status=429,retry_after=1,key=d'));
  eq([c.status, c.headers['retry-after']], [429, '1'], 'status given');
  await reset();
  eq((await request(oai('fail_first=2,key=a'))).status, 503, 'reset restarts the counters');
});

// ---------------------------------------------------------------------------------------------
// Scenario syntax

check('scenario syntax: unknown keys and bad values are 400s; ";" and "+" separate too', async () => {
  const r = await request(oai('tokns=3'));
  ok(r.status === 400 && r.body.includes('tokns'), `unknown key: ${r.status} ${r.body}`);
  eq((await request(oai('tokens=abc'))).status, 400, 'bad number');
  eq((await request(ant('error_shape=xml,status=500'))).status, 400, 'bad shape');
  eq(JSON.parse((await request(oai('tokens=2;usage_always'))).body).choices[0].message.content, 'tok0 tok1', '";"');
  const p = jsonData((await request(oai('tokens=2+usage_always', { stream: true }))).body);
  ok(p[p.length - 1].usage, '"+"');
});

check('eol=crlf frames with CRLF; split=7 delivers the same bytes in pieces', async () => {
  const r = await request(oai('tokens=2,eol=crlf', { stream: true }));
  ok(r.body.endsWith('data: [DONE]\r\n\r\n') && !/[^\r]\n/.test(r.body), 'CRLF');
  const cr = await request(oai('tokens=1,eol=cr', { stream: true }));
  ok(cr.body.endsWith('data: [DONE]\r\r') && !cr.body.includes('\n'), 'CR');
  const plain = await request(oai('tokens=2', { stream: true }));
  const split = await request(oai('tokens=2,split=7', { stream: true }));
  eq(split.body, plain.body.split('"model":"tokens=2"').join('"model":"tokens=2,split=7"'), 'same bytes');
  ok(split.chunks.length > 10, `arrived in ${split.chunks.length} reads`);
});

// ---------------------------------------------------------------------------------------------
// Control endpoints and counting

check('stats: requests, by_model, completed, errors; reset zeroes them', async () => {
  await reset();
  for (const m of ['m1', 'm1', 'm2']) await request(oai(m, { stream: m === 'm2' }));
  await request(oai('status=500'));
  const s = await stats();
  eq([s.name, s.requests, s.by_model, s.completed, s.errors, s.active, s.aborted, s.dropped],
    ['st', 4, { m1: 2, m2: 1, 'status=500': 1 }, 4, 1, 0, 0, 0], 'stats');
  await reset();
  const z = await stats();
  eq([z.requests, z.by_model, z.completed, z.errors], [0, {}, 0, 0], 'after reset');
});

check('aborted: a client leaving mid-stream is counted at once and the mock stops writing', async () => {
  await reset();
  const r = await request({ ...oai('tokens=1000,drip=20', { stream: true }), onData: (d, req) => req.destroy() });
  ok(!r.complete, 'client cut');
  const t0 = Date.now();
  const s = await waitFor(async () => { const s = await stats(); return s.aborted === 1 && s.active === 0 && s; }, 1000);
  ok(s, `not counted: ${JSON.stringify(await stats())}`);
  ok(Date.now() - t0 < 500, `took ${Date.now() - t0} ms`);
  eq([s.completed, s.requests], [0, 1], 'counts');
});

check('aborted: a client leaving during stall_head / a stall is counted too', async () => {
  await reset();
  for (const m of ['stall_head=5000', 'role_then_stall=5000', 'slow_ttft=5000']) {
    const r = request({ ...oai(m, { stream: true }), timeout: 200 });
    await r;
  }
  const s = await waitFor(async () => { const s = await stats(); return s.aborted === 3 && s.active === 0 && s; }, 1000);
  ok(s, `stats ${JSON.stringify(await stats())}`);
});

check('active and peak_active count answers in progress', async () => {
  await reset();
  const p = [1, 2, 3].map(() => request(oai('stall_head=1000')));
  ok(await waitFor(async () => (await stats()).active === 3), 'active during');
  await Promise.all(p);
  const s = await stats();
  eq([s.active, s.peak_active, s.completed], [0, 3, 3], 'after');
});

check('/_mock/requests: method, path, headers and the raw body as received; last 50; ?model=', async () => {
  await reset();
  const raw = '{"model": "rec",  "messages": [{"role":"user","content":"h\\u00e9"}]}';
  await request({ path: '/v1/chat/completions?x=1', body: raw, headers: { authorization: 'Bearer sk-test', 'x-extra': 'a' } });
  let log = await get('/_mock/requests');
  eq(log.length, 1, 'one entry');
  eq([log[0].method, log[0].path, log[0].headers.authorization, log[0].headers['x-extra'], log[0].body, log[0].model],
    ['POST', '/v1/chat/completions?x=1', 'Bearer sk-test', 'a', raw, 'rec'], 'entry');
  for (let i = 0; i < 55; i++) await request(oai(`n${i}`));
  log = await get('/_mock/requests');
  eq([log.length, log[0].model, log[49].model], [50, 'n5', 'n54'], 'ring of 50, oldest first');
  eq((await get('/_mock/requests?model=n7')).map((e) => e.model), ['n7'], 'filter');
});

check('/_mock/scenario: an override changes a model\'s behaviour until removed', async () => {
  const set = (scenario) => request({ path: '/_mock/scenario', body: { model: 'steady', scenario } });
  eq((await set('status=503')).status, 200, 'set');
  eq((await request(oai('steady'))).status, 503, 'overridden');
  eq(await get('/_mock/scenario'), { steady: 'status=503' }, 'listed');
  await set(null);
  eq((await request(oai('steady'))).status, 200, 'removed');
  eq((await set('bogus=1')).status, 400, 'bad scenario rejected');
});

check('keep-alive: a second request reuses the connection', async () => {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const a = await request({ ...oai('tokens=1', { stream: true }), agent });
  const b = await request({ ...oai('tokens=1'), agent });
  agent.destroy();
  ok(a.complete && b.complete && b.req.reusedSocket, 'reused');
  eq(a.headers.connection, 'keep-alive', 'connection header');
});

check('unknown path is 404, GET on a provider path is 405, non-JSON body is 400', async () => {
  eq((await request({ path: '/v1/nothing', body: {} })).status, 404, '404');
  eq((await request({ method: 'GET', path: '/v1/chat/completions' })).status, 405, '405');
  eq((await request({ path: '/v1/chat/completions', body: 'not json' })).status, 400, '400');
});

check('200 concurrent streams all complete', async () => {
  await reset();
  const rs = await Promise.all(Array.from({ length: 200 }, () => request(oai('tokens=5,drip=50', { stream: true }))));
  ok(rs.every((r) => r.complete && r.body.endsWith('data: [DONE]\n\n')), 'all complete');
  const s = await stats();
  ok(s.completed === 200 && s.peak_active >= 150, `stats ${JSON.stringify(s)}`);
});

check('TLS: --tls-cert/--tls-key serve HTTPS', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mock-tls-'));
  const key = path.join(dir, 'key.pem'), cert = path.join(dir, 'cert.pem');
  try {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'],
    { stdio: 'ignore' });
  } catch (e) {
    console.log('ok - # skip TLS: no openssl');
    return;
  }
  const m = await startMock(['--tls-cert', cert, '--tls-key', key, '--name', 'tls']);
  const ca = fs.readFileSync(cert);
  const r = await request({ ...oai('tokens=2', { stream: true }), port: m.port, tls: true, ca });
  ok(r.complete && r.body.endsWith('data: [DONE]\n\n') && r.headers['x-mock-name'] === 'tls', `tls stream: ${r.error}`);
  const d = await request({ ...oai('drop_after=1', { stream: true }), port: m.port, tls: true, ca });
  ok(!d.complete && d.body.includes('tok0'), 'tls drop');
  m.proc.kill('SIGTERM');
  fs.rmSync(dir, { recursive: true, force: true });
});

check('SIGTERM exits promptly even with streams in progress; stdout held only the listening line', async () => {
  const m = await startMock(['--name', 'term']);
  const pending = request({ ...oai('stall_head=10000', { stream: true }), port: m.port });
  await sleep(100);
  const t0 = Date.now();
  const exited = new Promise((r) => m.proc.on('exit', (code, sig) => r([code, sig])));
  m.proc.kill('SIGTERM');
  const [code] = await exited;
  ok(Date.now() - t0 < 1000, `took ${Date.now() - t0} ms`);
  eq(code, 0, 'exit code');
  eq(m.stdout(), `listening ${m.port}\n`, 'stdout');
  await pending;
});

// ---------------------------------------------------------------------------------------------

async function main() {
  const watchdog = setTimeout(() => { console.log('FAIL - selftest watchdog: took over 120 s'); console.log('0 passed, 1 failed'); process.exit(1); }, 120000);
  let pass = 0, failed = 0;
  let main;
  try {
    main = await startMock(['--name', 'st']);
    PORT = main.port;
  } catch (e) {
    console.log(`FAIL - start the mock: ${e.message}`);
    console.log('0 passed, 1 failed');
    process.exit(1);
  }
  for (const c of checks) {
    if (FILTER && !c.name.includes(FILTER)) continue;
    try {
      await c.fn();
      pass++;
      console.log(`ok - ${c.name}`);
    } catch (e) {
      failed++;
      console.log(`FAIL - ${c.name}: ${e instanceof Fail ? e.message : e.stack}`);
    }
  }
  if (main.stderr()) { failed++; console.log(`FAIL - mock wrote to stderr: ${main.stderr().slice(0, 2000)}`); }
  clearTimeout(watchdog);
  for (const p of children) if (p.exitCode === null) p.kill('SIGTERM');
  console.log(`${pass} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

main();
