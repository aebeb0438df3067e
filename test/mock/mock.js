#!/usr/bin/env node
'use strict';
/*
 * mock.js — a fake LLM provider for sluice's integration tests and `make bench`.
 * Node 20, standard library only.
 *
 *   node test/mock/mock.js --port PORT [--host 127.0.0.1] [--tls-cert FILE --tls-key FILE]
 *                          [--name NAME] [--verbose]
 *
 * PORT 0 picks a free port. Once listening it prints exactly one line, `listening PORT`, to
 * stdout and nothing else ever (stderr gets startup errors, and one line per request with
 * --verbose). SIGTERM and SIGINT exit at once. With --tls-cert/--tls-key it serves HTTPS.
 * --name (default "mock") goes into every response id (`chatcmpl-NAME`, `msg_NAME`, Gemini
 * `responseId`), into the `x-mock-name` response header and into /_mock/stats, so a test running
 * several mocks can tell which one served.
 *
 * DIALECTS (chosen by the request path; the query string is ignored except where noted)
 *   openai     POST …/chat/completions — /v1/chat/completions, any other prefix, and Azure's
 *              /openai/deployments/{deployment}/chat/completions?api-version=… (the deployment
 *              is then the model; api-version is required; the stream starts with Azure's
 *              `choices: []` prompt-filter chunk). Streams when body.stream === true.
 *   anthropic  POST …/messages. Requires model, max_tokens, messages and an `anthropic-version`
 *              header, like the real API. Streams when body.stream === true.
 *   gemini     POST …/models/{model}:generateContent and :streamGenerateContent (the model comes
 *              from the URL, percent-decoded). streamGenerateContent with ?alt=sse streams SSE;
 *              without it, Google's incrementally written JSON array (`[{…}`, `,\r\n{…}`, `]`).
 *   ollama     POST …/api/chat. NDJSON stream unless body.stream === false (Ollama's default).
 *   Every body must be a JSON object with the dialect's required fields, or the answer is a 400
 *   in that dialect's error shape.
 *
 * THE GENERATED ANSWER (deterministic: same request, same bytes)
 *   text        N tokens, streamed as the pieces "tok0", " tok1", " tok2", … (sync: joined).
 *   usage       prompt tokens = 10 per message (OpenAI/Ollama `messages`, Anthropic `messages`,
 *               Gemini `contents`) + 10 for a top-level system prompt (Anthropic `system`, Gemini
 *               `systemInstruction`) — so an OpenAI request and its translation count the same.
 *               completion tokens = text tokens + thinking tokens + 10 per tool call.
 *   max tokens  when the request's limit (OpenAI max_completion_tokens/max_tokens, Anthropic
 *               max_tokens, Gemini generationConfig.maxOutputTokens, Ollama options.num_predict)
 *               is below N, only that many tokens are sent and the finish reason is the
 *               dialect's "length" (length / max_tokens / MAX_TOKENS / done_reason length).
 *   ids         fixed: chatcmpl-NAME, created 1700000000, fp_NAME, msg_NAME, call_mock_I,
 *               toolu_mock_I, Ollama created_at 2024-01-01T00:00:00Z.
 *
 * SCENARIOS — picked per request by the model name (Gemini: the model in the URL; Azure: the
 * deployment). Items are separated by ',' (or ';' or '+', for config lists that split on ',');
 * `key=value` items set a key, bare words that are flags below set that flag, and any other bare
 * word is just a name (so `gpt-4o-mini` and `gpt-4o-mini,tokens=3` both work). An unknown
 * `key=value` or a bad value is answered with a 400 naming it. "Content events" are the events
 * that carry content: text, thinking and tool-call deltas (an Anthropic tool_use block start
 * counts; role chunks, block starts/stops, pings, finish and usage events do not). "After K"
 * means right after the K-th content event (K=0: after the preamble, before the first content;
 * K beyond the last: after the last content event, before the finish).
 *
 *   key=value / flag     meaning
 *   -------------------  ------------------------------------------------------------------
 *   tokens=N             N text tokens (default 5; default 0 when tool_calls is set).
 *   thinking=N           N reasoning tokens "think0", " think1", … before the text: OpenAI
 *                        delta.reasoning_content (DeepSeek style), Anthropic thinking block with
 *                        a signature_delta, Gemini parts with thought:true, Ollama message.thinking.
 *   tool_calls=N         N parallel tool calls after the text. Names come from the request's
 *                        tools (cycled), else "get_weather"; arguments are
 *                        {"city":"City<i>","n":<i>}. Streamed the way each provider does it:
 *                        OpenAI id/name delta then 5-byte argument fragments; Anthropic tool_use
 *                        blocks with input_json_delta ("" first); Gemini and Ollama whole calls in
 *                        one chunk. Finish reason tool_calls / tool_use / STOP / stop.
 *   huge=BYTES           text of exactly BYTES bytes (the cycle A-Z a-z 0-9 + /); streamed in
 *                        content events of `chunk` bytes; completion tokens = number of chunks.
 *   chunk=BYTES          piece size for huge (default 1024).
 *   drip=MS              wait MS before every stream event after the first.
 *   slow_ttft=MS         wait MS before the first content event (head and preamble go at once);
 *                        sync: the answer waits MS longer.
 *   tps=N                N content events per second after the first (1000/N ms apart);
 *                        sync: the answer waits content_events*1000/N ms longer.
 *   stall_head=MS        wait MS before sending the response head (any response, errors too).
 *   stall_mid=MS         go silent for MS after `after` content events, then continue.
 *   after=K              where stall_mid stalls (default 1).
 *   role_then_stall=MS   the preamble (OpenAI role chunk, Anthropic message_start…ping), then
 *                        silence for MS, then the rest of the stream.
 *   role_then_drop       the preamble only, then the socket is destroyed (= drop_after=0).
 *   drop_after=K         after K content events the socket is destroyed (no chunked terminator).
 *   drop_head            the request is read, then the socket is destroyed with no response.
 *   rst                  every drop above is a TCP reset instead of a FIN.
 *   malformed_after=K    after K content events one bad frame (OpenAI/Gemini `data: {not json`,
 *                        Anthropic `event: content_block_delta` + that data, Ollama `{not json`
 *                        line), then the stream continues to its normal end.
 *   malformed_close      with malformed_after: end the response cleanly right after the bad frame.
 *   error_event_after=K  after K content events the dialect's own in-stream error, then the
 *                        response ends cleanly (no [DONE], no finish): OpenAI
 *                        `data: {"error":{…,"type":"server_error","code":"mock_midstream_error"}}`,
 *                        Anthropic `event: error` overloaded_error, Gemini `data: {"error":
 *                        {"code": 503,…,"status": "UNAVAILABLE"}}`, Ollama `{"error":"…"}` line.
 *   error_event_first    the error event before anything else (even the role chunk).
 *   done_after_error     OpenAI: `data: [DONE]` after the error event (vLLM does this).
 *   no_done              the stream ends cleanly at the HTTP level without its terminator and
 *                        finish: OpenAI no finish chunk/usage/[DONE]; Anthropic no
 *                        message_delta/message_stop; Gemini no finishReason; Ollama no done:true.
 *   finish_apart         Gemini: finishReason in a chunk of its own (empty text part) instead of
 *                        on the last content chunk.
 *   usage_always         OpenAI: the usage chunk even without stream_options.include_usage.
 *   azure_filter         OpenAI: the Azure `choices: []` prompt-filter first chunk on any path.
 *   eol=lf|crlf|cr       line ends of SSE/NDJSON framing (default lf). `crlf` alone = eol=crlf.
 *   split=N              write every event in N-byte pieces, one event-loop turn apart (best
 *                        effort to make them separate TCP reads; UTF-8 may be cut mid-character).
 *   status=CODE          answer CODE (200..599) with an error body instead of the completion,
 *                        stream or not. With fixture: the fixture is the body, sent with CODE.
 *   error_shape=S        openai {"error":{message,type,param,code}} | flat {"object":"error",…} |
 *                        text (text/plain) | anthropic {"type":"error","error":{type,message}} |
 *                        gemini {"error":{code,message,status[,details RetryInfo]}} |
 *                        ollama {"error":"…"}. Default: the request's dialect.
 *   retry_after=SECONDS  `Retry-After: SECONDS` on the error (fractions allowed, sent as given).
 *   retry_after_date     `Retry-After` as an HTTP-date, retry_after seconds (default 1) from now,
 *                        rounded up to the next whole second.
 *   retry_after_ms=MS    `retry-after-ms: MS` (OpenAI's non-standard header).
 *   should_retry=B       `x-should-retry: true|false`.
 *   fail_first=N         the first N requests carrying this exact scenario string fail, later
 *                        ones succeed (faults removed). They fail with the faults given
 *                        (status, drops, stalls, …) or, when none is given, with status 503.
 *   key=K                no effect but to make the string, hence the fail_first counter, distinct.
 *   fixture=NAME         replay test/fixtures/NAME verbatim whatever the dialect: .sse as
 *                        text/event-stream and .ndjson as application/x-ndjson (streamed, one
 *                        frame per write, with drip/stall_head/eol/split and drop_after=K counting
 *                        frames), .json as application/json in one piece.
 *
 * SYNC ANSWERS under stream faults: drop_after/role_then_drop send the head (with the full
 * Content-Length) and the first half of the body, then drop; stall_mid/role_then_stall send
 * half, stall, send the rest; malformed_after answers 200 with the body `{not json`;
 * error_event_after/error_event_first answer with the dialect's overload status (503; Anthropic
 * 529) and error body. Faults that need no stream (stall_head, drop_head, status, …) act alike.
 *
 * CONTROL ENDPOINTS (never counted, never logged)
 *   GET  /_mock/stats     {"name", "requests", "by_model": {model: n}, "active", "peak_active",
 *                         "aborted", "completed", "dropped", "errors", "connections"}. requests counts every
 *                         non-control request (by_model under the model string as received);
 *                         it always equals active + completed + aborted + dropped. active = answers
 *                         in progress (stream or not); completed = answers the mock ended (any
 *                         status); aborted = the client went away before the end; dropped = the
 *                         mock destroyed the socket on purpose; errors = answers with status >= 400;
 *                         connections = TCP connections accepted (a client that reuses them makes
 *                         fewer than its requests).
 *   POST /_mock/reset     zero the counters (active stays live), forget the request log, the
 *                         fail_first counters and the scenario overrides.
 *   GET  /_mock/requests  the last 50 requests, oldest first: [{seq, method, path (with query),
 *                         headers (as received, lower-case names), body (raw string; bodies over
 *                         1 MiB are cut, with body_truncated and body_bytes), dialect, model}].
 *                         ?model=M keeps those whose model is M.
 *   POST /_mock/scenario  {"model": M, "scenario": S}: requests for model M behave as scenario
 *                         S from now on (M is still echoed); S null or "" removes the override.
 *                         GET lists the overrides. For tests where a provider "becomes slow".
 */

const http = require('http');
const https = require('https');
const fs = require('fs');
const path = require('path');

const FIXTURE_DIR = path.join(__dirname, '..', 'fixtures');
const CREATED = 1700000000;
const OLLAMA_TIME = '2024-01-01T00:00:00Z';
const LOG_SIZE = 50;
const LOG_BODY_MAX = 1 << 20;

// ---------------------------------------------------------------------------------------------
// Command line

function usage(msg) {
  process.stderr.write(`mock.js: ${msg}\nusage: node mock.js --port PORT [--host HOST] ` +
    `[--tls-cert FILE --tls-key FILE] [--name NAME] [--verbose]\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const o = { port: null, host: '127.0.0.1', cert: null, key: null, name: 'mock', verbose: false };
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i], v = null;
    const eq = a.indexOf('=');
    if (a.startsWith('--') && eq > 0) { v = a.slice(eq + 1); a = a.slice(0, eq); }
    const val = () => {
      if (v !== null) return v;
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      return argv[++i];
    };
    switch (a) {
      case '--port': o.port = /^\d+$/.test(v = val()) ? Number(v) : NaN; break;
      case '--host': o.host = val(); break;
      case '--tls-cert': o.cert = val(); break;
      case '--tls-key': o.key = val(); break;
      case '--name': o.name = val(); break;
      case '--verbose': o.verbose = true; break;
      default: usage(`unknown argument ${a}`);
    }
  }
  if (o.port === null || !(o.port >= 0 && o.port <= 65535)) usage('--port PORT (0..65535) is required');
  if (!o.cert !== !o.key) usage('--tls-cert and --tls-key go together');
  return o;
}

const opts = require.main === module ? parseArgs(process.argv.slice(2)) : null;
const NAME = opts ? opts.name : 'mock';

// ---------------------------------------------------------------------------------------------
// Scenarios

const NUM_KEYS = new Set(['tokens', 'thinking', 'tool_calls', 'huge', 'chunk', 'drip', 'slow_ttft',
  'tps', 'stall_head', 'stall_mid', 'after', 'role_then_stall', 'drop_after', 'malformed_after',
  'error_event_after', 'split', 'status', 'retry_after_ms', 'fail_first']);
const STR_KEYS = new Set(['error_shape', 'retry_after', 'should_retry', 'key', 'fixture', 'eol']);
const FLAGS = new Set(['role_then_drop', 'drop_head', 'rst', 'malformed_close', 'error_event_first',
  'done_after_error', 'no_done', 'finish_apart', 'usage_always', 'azure_filter', 'crlf',
  'retry_after_date']);
// What fail_first turns off once its failures are spent.
const FAULTS = ['status', 'stall_head', 'stall_mid', 'role_then_stall', 'role_then_drop',
  'drop_after', 'drop_head', 'malformed_after', 'error_event_after', 'error_event_first', 'no_done'];
const SHAPES = new Set(['openai', 'flat', 'text', 'anthropic', 'gemini', 'ollama']);
const EOLS = { lf: '\n', crlf: '\r\n', cr: '\r' };

const scenarioCache = new Map();

/* parseScenario("tokens=3,drip=5") -> {sc: {tokens: 3, drip: 5}} or {error: "…"}. Cached. */
function parseScenario(str) {
  let r = scenarioCache.get(str);
  if (r) return r;
  r = parseScenarioUncached(str);
  if (scenarioCache.size > 10000) scenarioCache.clear();
  scenarioCache.set(str, r);
  return r;
}

function parseScenarioUncached(str) {
  const sc = {};
  for (const raw of str.split(/[,;+]/)) {
    const item = raw.trim();
    if (!item) continue;
    const eq = item.indexOf('=');
    if (eq < 0) {
      if (FLAGS.has(item)) sc[item] = true;
      continue;                                   // any other bare word is a model name
    }
    const k = item.slice(0, eq).trim(), v = item.slice(eq + 1).trim();
    if (NUM_KEYS.has(k)) {
      if (!/^\d{1,10}$/.test(v)) return { error: `scenario ${k}=${v}: not a whole number` };
      sc[k] = Number(v);
    } else if (STR_KEYS.has(k)) {
      sc[k] = v;
    } else {
      return { error: `unknown scenario key '${k}' in '${str}'` };
    }
  }
  if (sc.crlf) sc.eol = sc.eol || 'crlf';
  if (sc.eol !== undefined && !EOLS[sc.eol]) return { error: `scenario eol=${sc.eol}: lf, crlf or cr` };
  if (sc.error_shape !== undefined && !SHAPES.has(sc.error_shape))
    return { error: `scenario error_shape=${sc.error_shape}: one of ${[...SHAPES].join(', ')}` };
  if (sc.retry_after !== undefined && !/^\d+(\.\d+)?$/.test(sc.retry_after))
    return { error: `scenario retry_after=${sc.retry_after}: seconds` };
  if (sc.should_retry !== undefined && !/^(true|false)$/.test(sc.should_retry))
    return { error: `scenario should_retry=${sc.should_retry}: true or false` };
  if (sc.status !== undefined && (sc.status < 200 || sc.status > 599))
    return { error: `scenario status=${sc.status}: 200..599` };
  if (sc.fixture !== undefined && !/^[A-Za-z0-9_-][A-Za-z0-9_.-]*$/.test(sc.fixture))
    return { error: `scenario fixture=${sc.fixture}: a file name in test/fixtures` };
  for (const k of ['tps', 'chunk', 'split'])
    if (sc[k] === 0) return { error: `scenario ${k}=0: must be positive` };
  return { sc };
}

/* The scenario a request runs, after fail_first has had its say. */
function applyFailFirst(str, sc) {
  if (!sc.fail_first) return sc;
  const n = (failCounts.get(str) || 0) + 1;
  failCounts.set(str, n);
  if (n > sc.fail_first) {
    const ok = { ...sc };
    for (const k of FAULTS) delete ok[k];
    return ok;
  }
  return FAULTS.some((k) => sc[k] !== undefined) ? sc : { ...sc, status: 503 };
}

// ---------------------------------------------------------------------------------------------
// State: counters, request log, fail_first counters, overrides

const stats = { requests: 0, by_model: {}, active: 0, peak_active: 0, aborted: 0, completed: 0,
  dropped: 0, errors: 0, connections: 0 };
let reqLog = [];
let seq = 0;
const failCounts = new Map();
const overrides = new Map();

function resetState() {
  Object.assign(stats, { requests: 0, by_model: {}, peak_active: stats.active, aborted: 0,
    completed: 0, dropped: 0, errors: 0, connections: 0 });
  reqLog = [];
  failCounts.clear();
  overrides.clear();
}

// ---------------------------------------------------------------------------------------------
// The answer a request gets, independent of dialect

const HUGE_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

function hugeText(n) {
  const unit = HUGE_ALPHABET.repeat(Math.ceil(Math.min(n, 1 << 16) / 64) || 1);
  return unit.repeat(Math.ceil(n / unit.length)).slice(0, n);
}

function pieces(word, n) {
  const out = new Array(n);
  for (let i = 0; i < n; i++) out[i] = (i ? ' ' : '') + word + i;
  return out;
}

function asArray(v) { return Array.isArray(v) ? v : []; }

function toolNames(dialect, body) {
  const names = [];
  for (const t of asArray(body.tools)) {
    if (!t || typeof t !== 'object') continue;
    if (dialect === 'anthropic' && typeof t.name === 'string') names.push(t.name);
    else if (dialect === 'gemini') {
      for (const f of asArray(t.functionDeclarations || t.function_declarations))
        if (f && typeof f.name === 'string') names.push(f.name);
    } else if (t.function && typeof t.function.name === 'string') names.push(t.function.name);
  }
  return names.length ? names : ['get_weather'];
}

function maxTokens(dialect, body) {
  let v;
  if (dialect === 'openai') v = body.max_completion_tokens ?? body.max_tokens;
  else if (dialect === 'anthropic') v = body.max_tokens;
  else if (dialect === 'gemini') v = body.generationConfig && body.generationConfig.maxOutputTokens;
  else if (dialect === 'ollama') v = body.options && body.options.num_predict;
  return Number.isInteger(v) && v > 0 ? v : null;
}

function promptTokens(dialect, body) {
  if (dialect === 'gemini')
    return 10 * asArray(body.contents).length + (body.systemInstruction || body.system_instruction ? 10 : 0);
  const sys = dialect === 'anthropic' && body.system &&
    (typeof body.system === 'string' || asArray(body.system).length) ? 10 : 0;
  return 10 * asArray(body.messages).length + sys;
}

/* plan: everything the dialect encoders need to write the answer. */
function buildPlan(dialect, body, sc, model) {
  let text;
  if (sc.huge !== undefined) {
    const all = hugeText(sc.huge), size = sc.chunk || 1024;
    text = [];
    for (let i = 0; i < all.length; i += size) text.push(all.slice(i, i + size));
  } else {
    text = pieces('tok', sc.tokens ?? (sc.tool_calls ? 0 : 5));
  }
  let finish = 'stop';
  const limit = maxTokens(dialect, body);
  if (sc.huge === undefined && !sc.tool_calls && limit !== null && limit < text.length) {
    text = text.slice(0, limit);
    finish = 'length';
  }
  const names = sc.tool_calls ? toolNames(dialect, body) : [];
  const tools = [];
  for (let i = 0; i < (sc.tool_calls || 0); i++) {
    const args = { city: `City${i}`, n: i };
    tools.push({ name: names[i % names.length], args, json: JSON.stringify(args) });
  }
  if (tools.length) finish = 'tool_calls';
  const thinking = pieces('think', sc.thinking || 0);
  const visible = text.length + 10 * tools.length;
  return {
    model, text, thinking, tools, finish,
    prompt: promptTokens(dialect, body),
    visible, thoughts: thinking.length, completion: visible + thinking.length,
  };
}

function fragments(s, size) {
  const out = [];
  for (let i = 0; i < s.length; i += size) out.push(s.slice(i, i + size));
  return out;
}

// ---------------------------------------------------------------------------------------------
// Dialect encoders. A stream is a list of events {s: bytes to write, c: true if it carries
// content}. `end` marks the terminator events that no_done leaves out.

const sse = (obj) => `data: ${JSON.stringify(obj)}\n\n`;
const named = (type, obj) => `event: ${type}\ndata: ${JSON.stringify(obj)}\n\n`;

/* Google's JSON style: `"key": value` with no space after commas (as on the wire). */
function gjson(v) {
  if (Array.isArray(v)) return '[' + v.map(gjson).join(',') + ']';
  if (v && typeof v === 'object')
    return '{' + Object.keys(v).map((k) => JSON.stringify(k) + ': ' + gjson(v[k])).join(',') + '}';
  return JSON.stringify(v);
}

const AZURE_FILTER = { choices: [], created: 0, id: '', model: '', object: '',
  prompt_filter_results: [{ prompt_index: 0, content_filter_results: {
    hate: { filtered: false, severity: 'safe' }, jailbreak: { filtered: false, detected: false },
    self_harm: { filtered: false, severity: 'safe' }, sexual: { filtered: false, severity: 'safe' },
    violence: { filtered: false, severity: 'safe' } } }] };

const openai = {
  usage(p) {
    const u = { prompt_tokens: p.prompt, completion_tokens: p.completion,
      total_tokens: p.prompt + p.completion };
    if (p.thoughts) u.completion_tokens_details = { reasoning_tokens: p.thoughts };
    return u;
  },

  stream(p, sc, ctx) {
    const withUsage = !!(ctx.body.stream_options && ctx.body.stream_options.include_usage);
    const chunk = (delta, finish) => {
      const o = { id: `chatcmpl-${NAME}`, object: 'chat.completion.chunk', created: CREATED,
        model: p.model, system_fingerprint: `fp_${NAME}`,
        choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }] };
      if (withUsage) o.usage = null;
      return sse(o);
    };
    const ev = [];
    if (ctx.azure || sc.azure_filter) ev.push({ s: sse(AZURE_FILTER) });
    const content = p.tools.length && !p.text.length ? null : '';
    ev.push({ s: chunk({ role: 'assistant', content }, null) });
    for (const t of p.thinking) ev.push({ s: chunk({ reasoning_content: t }, null), c: true });
    for (const t of p.text) ev.push({ s: chunk({ content: t }, null), c: true });
    p.tools.forEach((t, i) => {
      ev.push({ s: chunk({ tool_calls: [{ index: i, id: `call_mock_${i}`, type: 'function',
        function: { name: t.name, arguments: '' } }] }, null), c: true });
      for (const f of fragments(t.json, 5))
        ev.push({ s: chunk({ tool_calls: [{ index: i, function: { arguments: f } }] }, null), c: true });
    });
    ev.push({ s: chunk({}, p.finish), end: true });
    if (withUsage || sc.usage_always)
      ev.push({ s: sse({ id: `chatcmpl-${NAME}`, object: 'chat.completion.chunk', created: CREATED,
        model: p.model, system_fingerprint: `fp_${NAME}`, choices: [], usage: openai.usage(p) }),
        end: true });
    ev.push({ s: 'data: [DONE]\n\n', end: true });
    return ev;
  },

  sync(p) {
    const message = { role: 'assistant', content: p.text.length || !p.tools.length ? p.text.join('') : null };
    if (p.thinking.length) message.reasoning_content = p.thinking.join('');
    if (p.tools.length)
      message.tool_calls = p.tools.map((t, i) => ({ id: `call_mock_${i}`, type: 'function',
        function: { name: t.name, arguments: t.json } }));
    message.refusal = null;
    return JSON.stringify({ id: `chatcmpl-${NAME}`, object: 'chat.completion', created: CREATED,
      model: p.model, choices: [{ index: 0, message, logprobs: null, finish_reason: p.finish }],
      usage: openai.usage(p), system_fingerprint: `fp_${NAME}` });
  },

  midError(sc) {
    return sse({ error: { message: 'mock: mid-stream error', type: 'server_error', param: null,
      code: 'mock_midstream_error' } }) + (sc.done_after_error ? 'data: [DONE]\n\n' : '');
  },
  malformed: 'data: {not json\n\n',
  contentType: 'text/event-stream; charset=utf-8',
};

const ANTHROPIC_STOP = { stop: 'end_turn', length: 'max_tokens', tool_calls: 'tool_use' };

const anthropic = {
  stream(p, sc) {
    const ev = [];
    ev.push({ s: named('message_start', { type: 'message_start', message: { id: `msg_${NAME}`,
      type: 'message', role: 'assistant', content: [], model: p.model, stop_reason: null,
      stop_sequence: null, usage: { input_tokens: p.prompt, cache_creation_input_tokens: 0,
        cache_read_input_tokens: 0, output_tokens: 1 } } }) });
    let index = 0;
    const start = (block, c) => {
      ev.push({ s: named('content_block_start', { type: 'content_block_start', index, content_block: block }), c });
      if (index === 0) ev.push({ s: 'event: ping\ndata: {"type": "ping"}\n\n' });
    };
    const delta = (d, c) =>
      ev.push({ s: named('content_block_delta', { type: 'content_block_delta', index, delta: d }), c });
    const stop = () => ev.push({ s: named('content_block_stop', { type: 'content_block_stop', index: index++ }) });
    if (p.thinking.length) {
      start({ type: 'thinking', thinking: '', signature: '' });
      for (const t of p.thinking) delta({ type: 'thinking_delta', thinking: t }, true);
      delta({ type: 'signature_delta', signature: `sig_${NAME}` });
      stop();
    }
    if (p.text.length || (!p.thinking.length && !p.tools.length)) {
      start({ type: 'text', text: '' });
      for (const t of p.text) delta({ type: 'text_delta', text: t }, true);
      stop();
    }
    p.tools.forEach((t, i) => {
      start({ type: 'tool_use', id: `toolu_mock_${i}`, name: t.name, input: {} }, true);
      delta({ type: 'input_json_delta', partial_json: '' });
      for (const f of fragments(t.json, 5)) delta({ type: 'input_json_delta', partial_json: f }, true);
      stop();
    });
    ev.push({ s: named('message_delta', { type: 'message_delta', delta: {
      stop_reason: ANTHROPIC_STOP[p.finish], stop_sequence: null },
      usage: { output_tokens: p.completion } }), end: true });
    ev.push({ s: named('message_stop', { type: 'message_stop' }), end: true });
    return ev;
  },

  sync(p) {
    const content = [];
    if (p.thinking.length)
      content.push({ type: 'thinking', thinking: p.thinking.join(''), signature: `sig_${NAME}` });
    if (p.text.length || !p.tools.length) content.push({ type: 'text', text: p.text.join('') });
    p.tools.forEach((t, i) => content.push({ type: 'tool_use', id: `toolu_mock_${i}`, name: t.name, input: t.args }));
    return JSON.stringify({ id: `msg_${NAME}`, type: 'message', role: 'assistant', model: p.model,
      content, stop_reason: ANTHROPIC_STOP[p.finish], stop_sequence: null,
      usage: { input_tokens: p.prompt, cache_creation_input_tokens: 0, cache_read_input_tokens: 0,
        output_tokens: p.completion } });
  },

  midError: () => named('error', { type: 'error', error: { type: 'overloaded_error', message: 'Overloaded' } }),
  malformed: 'event: content_block_delta\ndata: {not json\n\n',
  contentType: 'text/event-stream; charset=utf-8',
};

const GEMINI_FINISH = { stop: 'STOP', length: 'MAX_TOKENS', tool_calls: 'STOP' };

const gemini = {
  usage(p, visible, thoughts) {
    const u = { promptTokenCount: p.prompt, candidatesTokenCount: visible,
      totalTokenCount: p.prompt + visible + thoughts };
    if (thoughts) u.thoughtsTokenCount = thoughts;
    return u;
  },

  /* The chunks as objects; the caller frames them (SSE or JSON array). */
  chunks(p, sc) {
    const out = [];
    let visible = 0, thoughts = 0;
    const push = (parts, c) => out.push({ c, o: { candidates: [{ content: { parts, role: 'model' },
      index: 0 }], usageMetadata: null, modelVersion: p.model, responseId: NAME } });
    const usage = (o) => { o.usageMetadata = gemini.usage(p, visible, thoughts); };
    for (const t of p.thinking) { thoughts++; push([{ text: t, thought: true }], true); usage(out[out.length - 1].o); }
    for (const t of p.text) { visible++; push([{ text: t }], true); usage(out[out.length - 1].o); }
    if (p.tools.length) {
      visible += 10 * p.tools.length;
      push(p.tools.map((t) => ({ functionCall: { name: t.name, args: t.args } })), true);
      usage(out[out.length - 1].o);
    }
    if (!sc.no_done) {
      if (sc.finish_apart || !out.length) { push([{ text: '' }], false); usage(out[out.length - 1].o); }
      const last = out[out.length - 1].o.candidates[0];
      last.finishReason = GEMINI_FINISH[p.finish];
      // keep the wire order of the recordings: content, finishReason, index
      delete last.index; last.index = 0;
    }
    return out;
  },

  stream(p, sc, ctx) {
    const cs = gemini.chunks(p, sc);
    if (ctx.sse) return cs.map(({ o, c }) => ({ s: `data: ${gjson(o)}\n\n`, c }));
    // without alt=sse: one JSON array written element by element
    const ev = cs.map(({ o, c }, i) => ({ s: (i ? ',\r\n' : '[') + gjson(o), c }));
    ev.push({ s: ']', end: true });
    return ev;
  },

  sync(p) {
    const parts = [];
    if (p.thinking.length) parts.push({ text: p.thinking.join(''), thought: true });
    if (p.text.length || !p.tools.length) parts.push({ text: p.text.join('') });
    for (const t of p.tools) parts.push({ functionCall: { name: t.name, args: t.args } });
    return JSON.stringify({ candidates: [{ content: { parts, role: 'model' },
      finishReason: GEMINI_FINISH[p.finish], index: 0 }],
    usageMetadata: gemini.usage(p, p.visible, p.thoughts), modelVersion: p.model,
    responseId: NAME }, null, 2);
  },

  midError: () => `data: ${gjson({ error: { code: 503,
    message: 'The model is overloaded. Please try again later.', status: 'UNAVAILABLE' } })}\n\n`,
  malformed: 'data: {not json\n\n',
};

const ollama = {
  line: (p, message, extra) => JSON.stringify({ model: p.model, created_at: OLLAMA_TIME, message,
    done: false, ...extra }) + '\n',

  final(p, message) {
    return { model: p.model, created_at: OLLAMA_TIME, message, done: true,
      done_reason: p.finish === 'length' ? 'length' : 'stop',
      total_duration: 1000000, load_duration: 1000, prompt_eval_count: p.prompt,
      prompt_eval_duration: 100000, eval_count: p.completion, eval_duration: 800000 };
  },

  toolCalls: (p) => p.tools.map((t, i) => ({ function: { index: i, name: t.name, arguments: t.args } })),

  stream(p) {
    const ev = [];
    for (const t of p.thinking) ev.push({ s: ollama.line(p, { role: 'assistant', content: '', thinking: t }), c: true });
    for (const t of p.text) ev.push({ s: ollama.line(p, { role: 'assistant', content: t }), c: true });
    if (p.tools.length)
      ev.push({ s: ollama.line(p, { role: 'assistant', content: '', tool_calls: ollama.toolCalls(p) }), c: true });
    ev.push({ s: JSON.stringify(ollama.final(p, { role: 'assistant', content: '' })) + '\n', end: true });
    return ev;
  },

  sync(p) {
    const message = { role: 'assistant', content: p.text.join('') };
    if (p.thinking.length) message.thinking = p.thinking.join('');
    if (p.tools.length) message.tool_calls = ollama.toolCalls(p);
    return JSON.stringify(ollama.final(p, message));
  },

  midError: () => '{"error":"mock: mid-stream error"}\n',
  malformed: '{not json\n',
  contentType: 'application/x-ndjson',
};

const DIALECTS = { openai, anthropic, gemini, ollama };

// ---------------------------------------------------------------------------------------------
// Error bodies

const ANTHROPIC_TYPES = { 400: 'invalid_request_error', 401: 'authentication_error',
  402: 'billing_error', 403: 'permission_error', 404: 'not_found_error', 413: 'request_too_large',
  429: 'rate_limit_error', 500: 'api_error', 504: 'timeout_error', 529: 'overloaded_error' };
const GOOGLE_STATUS = { 400: 'INVALID_ARGUMENT', 401: 'UNAUTHENTICATED', 403: 'PERMISSION_DENIED',
  404: 'NOT_FOUND', 409: 'ABORTED', 429: 'RESOURCE_EXHAUSTED', 499: 'CANCELLED', 500: 'INTERNAL',
  501: 'NOT_IMPLEMENTED', 503: 'UNAVAILABLE', 504: 'DEADLINE_EXCEEDED' };
const OPENAI_TYPES = { 400: 'invalid_request_error', 401: 'invalid_request_error',
  403: 'permission_error', 404: 'invalid_request_error', 422: 'invalid_request_error',
  429: 'requests' };
const REASONS = { 529: 'Overloaded' };

function reason(status) { return REASONS[status] || http.STATUS_CODES[status] || 'Unknown'; }

/* {type, body} of an error answer in one of the shapes. */
function errorBody(shape, status, message, sc) {
  const json = (o) => ({ type: 'application/json', body: JSON.stringify(o) });
  switch (shape) {
    case 'text':
      return { type: 'text/plain; charset=utf-8', body: `${message}\n` };
    case 'flat':
      return json({ object: 'error', message, type: status >= 500 ? 'InternalServerError' : 'BadRequestError',
        param: null, code: status });
    case 'anthropic':
      return json({ type: 'error', error: { type: ANTHROPIC_TYPES[status] ||
        (status >= 500 ? 'api_error' : 'invalid_request_error'), message }, request_id: `req_${NAME}` });
    case 'gemini': {
      const e = { code: status, message, status: GOOGLE_STATUS[status] || (status >= 500 ? 'INTERNAL' : 'FAILED_PRECONDITION') };
      if (sc && sc.retry_after !== undefined)
        e.details = [{ '@type': 'type.googleapis.com/google.rpc.RetryInfo', retryDelay: `${sc.retry_after}s` }];
      return { type: 'application/json; charset=UTF-8', body: JSON.stringify({ error: e }, null, 2) };
    }
    case 'ollama':
      return json({ error: message });
    default:
      return json({ error: { message, type: OPENAI_TYPES[status] || (status >= 500 ? 'server_error' : 'invalid_request_error'),
        param: null, code: status === 429 ? 'rate_limit_exceeded' : null } });
  }
}

function retryHeaders(sc) {
  const h = {};
  if (sc.retry_after_date) {
    const secs = sc.retry_after !== undefined ? Number(sc.retry_after) : 1;
    h['retry-after'] = new Date((Math.floor(Date.now() / 1000) + 1 + Math.ceil(secs)) * 1000).toUTCString();
  } else if (sc.retry_after !== undefined) {
    h['retry-after'] = sc.retry_after;
  }
  if (sc.retry_after_ms !== undefined) h['retry-after-ms'] = String(sc.retry_after_ms);
  if (sc.should_retry !== undefined) h['x-should-retry'] = sc.should_retry;
  return h;
}

// ---------------------------------------------------------------------------------------------
// One exchange: its response, how it ended, and cancellable waits

class Exchange {
  constructor(req, res) {
    this.req = req;
    this.res = res;
    this.closed = false;     // the connection is gone (client left, or we dropped it)
    this.settled = false;    // counted in completed/aborted/dropped
    this.dropping = false;
    this.wake = null;        // resolves the pending wait early when the connection closes
    stats.requests++;
    stats.active++;
    if (stats.active > stats.peak_active) stats.peak_active = stats.active;
    res.on('error', () => {});
    res.on('finish', () => this.settle('completed'));
    res.on('close', () => {
      this.closed = true;
      if (this.wake) this.wake();
      this.settle(this.dropping ? 'dropped' : 'aborted');
    });
  }

  settle(how) {
    if (this.settled) return;
    this.settled = true;
    stats.active--;
    stats[how]++;
  }

  /* Wait ms (nothing when ms <= 0); returns early when the connection closes. */
  sleep(ms) {
    if (!(ms > 0) || this.closed) return null;
    return new Promise((resolve) => {
      const t = setTimeout(() => { this.wake = null; resolve(); }, ms);
      this.wake = () => { clearTimeout(t); this.wake = null; resolve(); };
    });
  }

  head(status, headers) {
    if (status >= 400) stats.errors++;
    this.res.writeHead(status, reason(status), { 'x-mock-name': NAME, ...headers });
  }

  /* Write s; when the socket is backed up, wait until it drains (or closes). */
  async write(s, split) {
    if (this.closed) return;
    if (split) {
      const b = Buffer.from(s);
      for (let i = 0; i < b.length && !this.closed; i += split) {
        if (i) await new Promise((r) => setImmediate(r));
        if (!this.closed && !this.res.write(b.subarray(i, i + split))) await this.drained();
      }
      return;
    }
    if (!this.res.write(s)) await this.drained();
  }

  drained() {
    if (this.closed) return null;
    return new Promise((resolve) => {
      const done = () => { this.wake = null; this.res.removeListener('drain', done); resolve(); };
      this.wake = done;
      this.res.once('drain', done);
    });
  }

  end(s) { if (!this.closed) this.res.end(s); }

  /* Destroy the connection on purpose, after what was written has reached the kernel. */
  async drop(rst) {
    if (this.closed) return;
    this.dropping = true;
    await new Promise((r) => setImmediate(r));   // let the corked writes of this tick go out
    const sock = this.res.socket || this.req.socket;
    while (!this.closed && sock && sock.writableLength > 0) await this.sleep(2);
    if (this.closed || !sock) return;
    if (rst && sock.resetAndDestroy) sock.resetAndDestroy(); else sock.destroy();
  }
}

// ---------------------------------------------------------------------------------------------
// Sending answers

/* A streamed answer: head, events with pacing, faults at their positions. */
async function sendStream(x, events, sc, dialect, headers) {
  const enc = DIALECTS[dialect];
  const eol = sc.eol && sc.eol !== 'lf' && !headers.array ? EOLS[sc.eol] : null;
  const frame = (s) => (eol ? s.replace(/\n/g, eol) : s);
  delete headers.array;
  if (sc.no_done) events = events.filter((e) => !e.end);

  // index -> what happens right before events[index] is written (index may be events.length)
  const at = new Map();
  const add = (i, a) => { if (!at.has(i)) at.set(i, []); at.get(i).push(a); };
  const contentIdx = [];
  events.forEach((e, i) => { if (e.c) contentIdx.push(i); });
  const pos = (k) => {
    if (k === 0) {
      const first = events.findIndex((e) => e.c || e.end);
      return first < 0 ? events.length : first;
    }
    return contentIdx.length ? contentIdx[Math.min(k, contentIdx.length) - 1] + 1 : pos(0);
  };
  if (sc.error_event_first) add(0, { error: true });
  if (sc.role_then_stall !== undefined) add(pos(0), { stall: sc.role_then_stall });
  if (sc.stall_mid !== undefined) add(pos(sc.after ?? 1), { stall: sc.stall_mid });
  if (sc.malformed_after !== undefined) add(pos(sc.malformed_after), { malformed: true });
  if (sc.error_event_after !== undefined) add(pos(sc.error_event_after), { error: true });
  if (sc.role_then_drop) add(pos(0), { drop: true });
  if (sc.drop_after !== undefined) add(pos(sc.drop_after), { drop: true });

  x.head(200, headers);
  x.res.flushHeaders();
  let content = 0;
  for (let i = 0; i <= events.length; i++) {
    const acts = at.get(i);
    if (acts) {
      // order at one position: stall, malformed frame, error event, drop
      for (const a of acts) if (a.stall !== undefined) { await x.sleep(a.stall); if (x.closed) return; }
      if (acts.some((a) => a.malformed)) {
        await x.write(frame(enc.malformed), sc.split);
        if (sc.malformed_close) return x.end();
      }
      if (acts.some((a) => a.error)) {
        await x.write(frame(enc.midError(sc)), sc.split);
        return x.end();
      }
      if (acts.some((a) => a.drop)) return x.drop(sc.rst);
      if (x.closed) return;
    }
    if (i === events.length) break;
    const e = events[i];
    let wait = i > 0 ? sc.drip || 0 : 0;
    if (e.c) {
      if (content === 0) wait = Math.max(wait, sc.slow_ttft || 0);
      else if (sc.tps) wait = Math.max(wait, 1000 / sc.tps);
      content++;
    }
    if (wait > 0) { await x.sleep(wait); if (x.closed) return; }
    await x.write(frame(e.s), sc.split);
    if (x.closed) return;
  }
  x.end();
}

/* A whole answer (sync completion or error), with the stream faults mapped onto a body. */
async function sendWhole(x, status, type, body, sc, extraHeaders) {
  if (sc.drop_head) return x.drop(sc.rst);
  const buf = Buffer.from(body);
  const headers = { 'content-type': type, 'content-length': buf.length, ...extraHeaders };
  const half = buf.length >> 1;
  if (status < 300 && (sc.role_then_drop || sc.drop_after !== undefined)) {
    x.head(status, headers);
    await x.write(buf.subarray(0, half));
    return x.drop(sc.rst);
  }
  if (status < 300 && (sc.stall_mid !== undefined || sc.role_then_stall !== undefined)) {
    x.head(status, headers);
    await x.write(buf.subarray(0, half));
    await x.sleep(sc.stall_mid ?? sc.role_then_stall);
    return x.end(buf.subarray(half));
  }
  x.head(status, headers);
  x.end(buf);
}

const fixtureCache = new Map();

/* Replay of a recorded fixture, verbatim. */
async function sendFixture(x, sc) {
  let data = fixtureCache.get(sc.fixture);
  if (data === undefined) try {
    data = fs.readFileSync(path.join(FIXTURE_DIR, sc.fixture), 'utf8');
    fixtureCache.set(sc.fixture, data);
  } catch (e) {
    const err = errorBody('openai', 404, `mock: no fixture ${sc.fixture} in ${FIXTURE_DIR}`);
    return sendWhole(x, 404, err.type, err.body, {}, {});
  }
  await x.sleep(sc.stall_head);
  if (x.closed) return;
  const status = sc.status || 200;
  const extra = status !== 200 ? retryHeaders(sc) : {};
  if (sc.fixture.endsWith('.json') || !/\.(sse|ndjson)$/.test(sc.fixture))
    return sendWhole(x, status, 'application/json', data, { drop_head: sc.drop_head, rst: sc.rst }, extra);
  const ndjson = sc.fixture.endsWith('.ndjson');
  const frames = data.split(ndjson ? /(?<=\n)/ : /(?<=\n\n)/).map((s) => ({ s }));
  if (sc.drop_head) return x.drop(sc.rst);
  // frames count as content for drop_after/stall_mid; no terminator is synthesised
  frames.forEach((f) => { f.c = true; });
  const faults = { drip: sc.drip, eol: sc.eol, split: sc.split, rst: sc.rst, drop_after: sc.drop_after,
    stall_mid: sc.stall_mid, after: sc.after };
  const headers = { 'content-type': ndjson ? 'application/x-ndjson' : 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache' };
  if (status !== 200) { x.head(status, { ...headers, ...extra }); x.end(data); return; }
  return sendStream(x, frames, faults, 'openai', headers);
}

// ---------------------------------------------------------------------------------------------
// Routing

/* {dialect, model, stream, sse, azure} for a provider path, or null. */
function route(req, url, body) {
  const p = url.pathname;
  let m;
  if (p.endsWith('/chat/completions')) {
    const azure = /\/openai\/deployments\/([^/]+)\/chat\/completions$/.exec(p);
    return { dialect: 'openai', azure: !!azure,
      model: azure ? safeDecode(azure[1]) : body && body.model,
      stream: !!body && body.stream === true };
  }
  if (p.endsWith('/messages'))
    return { dialect: 'anthropic', model: body && body.model, stream: !!body && body.stream === true };
  if ((m = /\/models\/([^/]+):(generateContent|streamGenerateContent)$/.exec(p)))
    return { dialect: 'gemini', model: safeDecode(m[1]), stream: m[2] === 'streamGenerateContent',
      sse: url.searchParams.get('alt') === 'sse' };
  if (p.endsWith('/api/chat'))
    return { dialect: 'ollama', model: body && body.model, stream: !body || body.stream !== false };
  return null;
}

function safeDecode(s) { try { return decodeURIComponent(s); } catch (e) { return s; } }

/* What the real provider would reject outright; null when the request is acceptable. */
function invalid(r, body, req, url) {
  if (!body || typeof body !== 'object' || Array.isArray(body)) return 'request body is not a JSON object';
  if (typeof r.model !== 'string' || !r.model) return 'model is required';
  switch (r.dialect) {
    case 'openai':
      if (r.azure && !url.searchParams.get('api-version')) return 'api-version query parameter is required';
      if (!Array.isArray(body.messages) || !body.messages.length) return 'messages must be a non-empty array';
      break;
    case 'anthropic':
      if (!req.headers['anthropic-version']) return 'anthropic-version: header is required';
      if (!Number.isInteger(body.max_tokens) || body.max_tokens < 1) return 'max_tokens: Field required';
      if (!Array.isArray(body.messages) || !body.messages.length) return 'messages: Field required';
      for (const m of body.messages)
        if (!m || (m.role !== 'user' && m.role !== 'assistant'))
          return `messages: Unexpected role ${JSON.stringify(m && m.role)}`;
      break;
    case 'gemini':
      if (!Array.isArray(body.contents) || !body.contents.length) return 'contents is not specified';
      break;
    case 'ollama':
      if (!Array.isArray(body.messages)) return 'messages are required';
      break;
  }
  return null;
}

function sendJSON(res, status, obj) {
  const s = JSON.stringify(obj);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(s) });
  res.end(s);
}

function control(req, res, url, raw) {
  const p = url.pathname;
  if (p === '/_mock/stats' && req.method === 'GET') return sendJSON(res, 200, { name: NAME, ...stats });
  if (p === '/_mock/reset' && req.method === 'POST') { resetState(); return sendJSON(res, 200, { ok: true }); }
  if (p === '/_mock/requests' && req.method === 'GET') {
    const model = url.searchParams.get('model');
    return sendJSON(res, 200, model === null ? reqLog : reqLog.filter((r) => r.model === model));
  }
  if (p === '/_mock/scenario' && req.method === 'GET') return sendJSON(res, 200, Object.fromEntries(overrides));
  if (p === '/_mock/scenario' && req.method === 'POST') {
    let b;
    try { b = JSON.parse(raw); } catch (e) { b = null; }
    if (!b || typeof b.model !== 'string') return sendJSON(res, 400, { error: 'want {"model": M, "scenario": S}' });
    if (b.scenario === null || b.scenario === undefined || b.scenario === '') overrides.delete(b.model);
    else {
      const parsed = parseScenario(String(b.scenario));
      if (parsed.error) return sendJSON(res, 400, { error: parsed.error });
      overrides.set(b.model, String(b.scenario));
    }
    return sendJSON(res, 200, { ok: true });
  }
  return sendJSON(res, 404, { error: `no control endpoint ${req.method} ${p}` });
}

async function handle(req, res, raw) {
  const url = new URL(req.url, 'http://mock');
  if (url.pathname.startsWith('/_mock/')) return control(req, res, url, raw);

  const x = new Exchange(req, res);
  const my = ++seq;
  let body = null;
  try { body = JSON.parse(raw); } catch (e) { /* judged by invalid() */ }
  const r = route(req, url, body);
  const entry = { seq: my, method: req.method, path: req.url, headers: req.headers,
    body: raw.length > LOG_BODY_MAX ? raw.slice(0, LOG_BODY_MAX) : raw,
    dialect: r ? r.dialect : null, model: r && typeof r.model === 'string' ? r.model : null };
  if (raw.length > LOG_BODY_MAX) { entry.body_truncated = true; entry.body_bytes = Buffer.byteLength(raw); }
  reqLog.push(entry);
  if (reqLog.length > LOG_SIZE) reqLog.shift();
  if (entry.model !== null) stats.by_model[entry.model] = (stats.by_model[entry.model] || 0) + 1;
  if (opts && opts.verbose) process.stderr.write(`mock[${NAME}] #${my} ${req.method} ${req.url} ${entry.model}\n`);

  if (!r || req.method !== 'POST') {
    const e = errorBody('openai', r ? 405 : 404, r ? `mock: ${req.method} not allowed` : `mock: no route for ${url.pathname}`);
    return sendWhole(x, r ? 405 : 404, e.type, e.body, {}, {});
  }
  const fail = (msg, status = 400) => {
    const e = errorBody(r.dialect, status, msg);
    return sendWhole(x, status, e.type, e.body, {}, {});
  };
  const bad = invalid(r, body, req, url);
  if (bad) return fail(bad);

  const str = overrides.has(r.model) ? overrides.get(r.model) : r.model;
  const parsed = parseScenario(str);
  if (parsed.error) return fail(`mock: ${parsed.error}`);
  const sc = applyFailFirst(str, parsed.sc);
  const enc = DIALECTS[r.dialect];

  if (sc.fixture !== undefined) return sendFixture(x, sc);

  await x.sleep(sc.stall_head);
  if (x.closed) return;

  if (sc.status !== undefined && sc.status !== 200) {
    const e = errorBody(sc.error_shape || r.dialect, sc.status, `mock: HTTP ${sc.status} ${reason(sc.status)}`, sc);
    return sendWhole(x, sc.status, e.type, e.body, sc, retryHeaders(sc));
  }

  const plan = buildPlan(r.dialect, body, sc, r.model);
  if (!r.stream) {
    if (sc.error_event_after !== undefined || sc.error_event_first) {
      const status = r.dialect === 'anthropic' ? 529 : 503;
      const e = errorBody(r.dialect, status, 'mock: error instead of the answer', sc);
      return sendWhole(x, status, e.type, e.body, sc, {});
    }
    const n = plan.text.length + plan.thinking.length + plan.tools.length;
    await x.sleep((sc.slow_ttft || 0) + (sc.tps ? Math.ceil(n * 1000 / sc.tps) : 0));
    if (x.closed) return;
    if (sc.malformed_after !== undefined) return sendWhole(x, 200, 'application/json', '{not json', {}, {});
    const type = r.dialect === 'gemini' ? 'application/json; charset=UTF-8' : 'application/json';
    return sendWhole(x, 200, type, enc.sync(plan), sc, {});
  }

  if (sc.drop_head) return x.drop(sc.rst);
  const ctx = { body, azure: r.azure, sse: r.sse };
  const events = enc.stream(plan, sc, ctx);
  const headers = { 'content-type': r.dialect !== 'gemini' ? enc.contentType
    : r.sse ? 'text/event-stream' : 'application/json; charset=UTF-8', 'cache-control': 'no-cache' };
  if (r.dialect === 'gemini' && !r.sse) headers.array = true;
  return sendStream(x, events, sc, r.dialect, headers);
}

// ---------------------------------------------------------------------------------------------
// Server

function onRequest(req, res) {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    handle(req, res, Buffer.concat(chunks).toString('utf8')).catch((e) => {
      process.stderr.write(`mock[${NAME}]: ${e && e.stack || e}\n`);
      if (!res.headersSent) sendJSON(res, 500, { error: { message: `mock crashed: ${e}`, type: 'mock_bug' } });
      else res.destroy();
    });
  });
}

function main() {
  const server = opts.cert
    ? https.createServer({ cert: fs.readFileSync(opts.cert), key: fs.readFileSync(opts.key) }, onRequest)
    : http.createServer(onRequest);
  server.requestTimeout = 0;
  server.headersTimeout = 3600 * 1000;
  server.keepAliveTimeout = 60 * 1000;
  server.timeout = 0;
  server.maxRequestsPerSocket = 0;
  server.on('connection', (s) => { stats.connections++; s.setNoDelay(true); });
  server.on('clientError', (err, sock) => { if (sock.writable) sock.end('HTTP/1.1 400 Bad Request\r\n\r\n'); else sock.destroy(); });
  server.on('error', (e) => { process.stderr.write(`mock[${NAME}]: ${e.message}\n`); process.exit(1); });
  for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
  server.listen({ port: opts.port, host: opts.host, backlog: 4096 }, () => {
    process.stdout.write(`listening ${server.address().port}\n`);
  });
}

if (require.main === module) main();
module.exports = { parseScenario, buildPlan, DIALECTS };
