#!/usr/bin/env node
/*
 * run.mjs — end-to-end tests of sluice with the official `openai` npm package as the client.
 *
 *   node test/e2e/run.mjs [--bin build/x86_64/sluice] [--only SUBSTRING] [--verbose]
 *
 * By itself it: installs the pinned SDK (`npm ci`, quietly) when test/e2e/node_modules is missing
 * or does not match package-lock.json; starts the mock provider (test/mock/mock.js) and the
 * gateway (`sluice -c CONFIG`, a temp config pointing at the mock); runs every test below with
 * the SDK pointed at the gateway; stops both. One line per test, `ok - NAME` or
 * `FAIL - NAME: REASON`, then `N passed, M failed` as the last line; exit 1 on any failure.
 * On a failure the gateway's log tail is printed (as `# ` lines) before the count.
 *
 * Everything is bounded: each test has TEST_TIMEOUT_MS (its HTTP requests, streams included, are
 * aborted then), the whole run SUITE_DEADLINE_MS (tests not started by then fail as "not run"),
 * and a hard watchdog kills everything if even that is passed.
 *
 * The contract under test: issue 4 (point 10) and DESIGN.md §3 — the SDK cannot tell sluice from
 * the provider on the happy path, and gets an honest error on every failure path; after the
 * first content a failure is one `data: {"error":{…,"code":"stream_interrupted"}}` event and no
 * `data: [DONE]`, which the SDK raises as APIError (a stream that merely stops would pass the SDK
 * as a silent, truncated success).
 */

import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isDeepStrictEqual } from 'node:util';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '..', '..');

const TEST_TIMEOUT_MS = 12_000;     // the longest test waits ~5 s (timeout_first_byte)
const SUITE_DEADLINE_MS = 60_000;   // no test starts after this
const WATCHDOG_MS = 120_000;        // hard stop
const START_TIMEOUT_MS = 10_000;    // mock and gateway each
const NPM_TIMEOUT_MS = 90_000;

// The mock's deterministic answer (test/mock/mock.js: "THE GENERATED ANSWER").
const TEXT5 = 'tok0 tok1 tok2 tok3 tok4';
const USAGE_1MSG_5TOK = { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 };
const MESSAGES = [{ role: 'user', content: 'Say something.' }];

// ---------------------------------------------------------------------------------------------
// Command line

function parseArgs(argv) {
  const o = { bin: 'build/x86_64/sluice', only: null, verbose: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--bin') o.bin = val();
    else if (a.startsWith('--bin=')) o.bin = a.slice(6);
    else if (a === '--only') o.only = val();
    else if (a === '--verbose') o.verbose = true;
    else usage(`unknown argument ${a}`);
  }
  o.bin = path.resolve(process.cwd(), o.bin);
  return o;
}

function usage(msg) {
  process.stderr.write(`run.mjs: ${msg}\nusage: node test/e2e/run.mjs [--bin PATH] [--only SUBSTRING] [--verbose]\n`);
  process.exit(2);
}

const opts = parseArgs(process.argv.slice(2));

// ---------------------------------------------------------------------------------------------
// Small assertion helpers: one-line, exact messages

class Failure extends Error {}

function fail(msg) { throw new Failure(msg); }
function show(v) { return v === undefined ? 'undefined' : JSON.stringify(v); }
function eq(actual, expected, what) {
  if (!isDeepStrictEqual(actual, expected)) fail(`${what}: expected ${show(expected)}, got ${show(actual)}`);
}
function ok(cond, what) { if (!cond) fail(what); }

/* A thrown value, described on one line — an APIError with its status, code and message. */
function describe(e, APIError) {
  if (APIError && e instanceof APIError)
    return `${e.constructor.name} status=${e.status ?? '-'} type=${e.type ?? '-'} code=${e.code ?? '-'}: ${e.message}`;
  if (e instanceof Error) {
    const cause = e.cause ? ` (cause: ${e.cause.code || e.cause.message || e.cause})` : '';
    return `${e.constructor.name}: ${e.message}${cause}`;
  }
  return String(e);
}

// ---------------------------------------------------------------------------------------------
// Setup: the SDK, the mock, the gateway

/* node_modules matches package-lock.json: every locked package installed at its locked version. */
function depsCurrent() {
  const lockFile = path.join(HERE, 'package-lock.json');
  const lock = JSON.parse(readFileSync(lockFile, 'utf8'));
  for (const [where, meta] of Object.entries(lock.packages || {})) {
    if (!where.startsWith('node_modules/')) continue;
    const pj = path.join(HERE, where, 'package.json');
    if (!existsSync(pj)) return false;
    if (JSON.parse(readFileSync(pj, 'utf8')).version !== meta.version) return false;
  }
  return true;
}

function ensureDeps() {
  if (depsCurrent()) return;
  const r = spawnSync('npm', ['ci', '--no-audit', '--no-fund', '--loglevel=error'],
    { cwd: HERE, encoding: 'utf8', timeout: NPM_TIMEOUT_MS });
  if (r.error || r.status !== 0) {
    const why = r.error ? r.error.message : `exit ${r.status}`;
    throw new Error(`npm ci in test/e2e failed (${why}): ${(r.stderr || '').trim().slice(-1500)}`);
  }
  if (!depsCurrent()) throw new Error('npm ci ran but node_modules still does not match package-lock.json');
}

const children = [];

function killAll() {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
}
process.on('exit', killAll);

function exited(proc) {
  return proc.exitCode !== null || proc.signalCode !== null;
}

function waitExit(proc, ms) {
  if (exited(proc)) return Promise.resolve(true);
  return new Promise((res) => {
    const t = setTimeout(() => res(false), ms);
    proc.once('exit', () => { clearTimeout(t); res(true); });
  });
}

function startMock() {
  const proc = spawn(process.execPath, [path.join(ROOT, 'test/mock/mock.js'), '--port', '0'],
    { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(proc);
  let err = '';
  proc.stderr.on('data', (d) => { err += d; });
  return new Promise((resolve, reject) => {
    let out = '';
    const t = setTimeout(() => reject(new Error(`mock did not print "listening PORT" within ${START_TIMEOUT_MS}ms; stderr: ${err}`)), START_TIMEOUT_MS);
    proc.stdout.on('data', (d) => {
      out += d;
      const m = /^listening (\d+)$/m.exec(out);
      if (m) { clearTimeout(t); resolve({ proc, port: Number(m[1]) }); }
    });
    proc.on('exit', (code, sig) => {
      clearTimeout(t);
      reject(new Error(`mock exited (${code ?? sig}) before listening; stderr: ${err}`));
    });
  });
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function canConnect(port) {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    const done = (v) => { s.destroy(); resolve(v); };
    s.setTimeout(500, () => done(false));
    s.on('connect', () => done(true));
    s.on('error', () => done(false));
  });
}

function gatewayConfig(port, mockPort) {
  return `; written by test/e2e/run.mjs
[server]
listen = 127.0.0.1:${port}

[provider.mock]
type = openai
base_url = http://127.0.0.1:${mockPort}/v1
api_key = test-key
timeout_first_byte = 5s
timeout_idle = 2s

[model.gpt-test]
targets = mock/tokens=5

[model.gpt-fallback]
targets = mock/role_then_drop, mock/tokens=5

[provider.anth]
type = anthropic
base_url = http://127.0.0.1:${mockPort}
api_key = test-key
timeout_first_byte = 5s
timeout_idle = 2s

[provider.gem]
type = gemini
base_url = http://127.0.0.1:${mockPort}/v1beta
api_key = test-key
timeout_first_byte = 5s
timeout_idle = 2s

[provider.oll]
type = ollama
base_url = http://127.0.0.1:${mockPort}
timeout_first_byte = 5s
timeout_idle = 2s

[provider.az]
type = azure
base_url = http://127.0.0.1:${mockPort}
api_key = test-key
timeout_first_byte = 5s
timeout_idle = 2s
`;
}

async function startGateway(dir, mockPort) {
  if (!existsSync(opts.bin)) throw new Error(`no gateway binary at ${opts.bin} (build it, or pass --bin)`);
  const port = await freePort();
  const config = path.join(dir, 'sluice.ini');
  writeFileSync(config, gatewayConfig(port, mockPort));
  const proc = spawn(opts.bin, ['-c', config], { stdio: ['ignore', 'ignore', 'pipe'] });
  children.push(proc);
  const gw = { proc, port, log: '' };
  proc.stderr.on('data', (d) => { gw.log = (gw.log + d).slice(-200_000); });
  const until = Date.now() + START_TIMEOUT_MS;
  while (Date.now() < until) {
    if (exited(proc)) throw new Error(`gateway exited (${proc.exitCode ?? proc.signalCode}) before listening; log: ${gw.log.trim()}`);
    if (await canConnect(port)) return gw;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`gateway did not accept connections on 127.0.0.1:${port} within ${START_TIMEOUT_MS}ms; log: ${gw.log.trim()}`);
}

// ---------------------------------------------------------------------------------------------
// The tests. Each gets { client } (an SDK client bound to the gateway, maxRetries 0, whose
// requests are aborted when the test times out) and the SDK module as `sdk`.

/* Iterate an SDK stream to its end or its error: the content pieces, the chunks, the error. */
async function drain(stream) {
  const pieces = [], chunks = [];
  let error = null;
  try {
    for await (const chunk of stream) {
      chunks.push(chunk);
      const c = chunk.choices?.[0]?.delta?.content;
      if (c) pieces.push(c);
    }
  } catch (e) {
    error = e;
  }
  return { pieces, chunks, error, text: pieces.join('') };
}

/* `promise` must reject with the SDK's APIError of `status` (and of class `cls`, if given). */
async function expectAPIError(sdk, promise, status, cls) {
  let res;
  try {
    res = await promise;
  } catch (e) {
    if (!(e instanceof sdk.APIError)) fail(`expected APIError ${status}, got ${describe(e, sdk.APIError)}`);
    if (e.status !== status) fail(`expected APIError ${status}, got ${describe(e, sdk.APIError)}`);
    if (cls && !(e instanceof cls)) fail(`expected ${cls.name}, got ${describe(e, sdk.APIError)}`);
    return e;
  }
  fail(`expected APIError ${status}, got a successful response: ${show(res).slice(0, 300)}`);
}

/* A streamed request that must deliver `expectText` and then fail with stream_interrupted. */
async function expectInterrupted(sdk, client, model, expectText) {
  let stream;
  try {
    stream = await client.chat.completions.create({ model, messages: MESSAGES, stream: true });
  } catch (e) {
    fail(`the stream should start (content comes before the failure), but the request failed: ${describe(e, sdk.APIError)}`);
  }
  const r = await drain(stream);
  if (!r.error) fail(`the stream ended as a success with content ${show(r.text)} — a silently truncated answer`);
  if (!(r.error instanceof sdk.APIError)) fail(`expected APIError from the stream_interrupted event, got ${describe(r.error, sdk.APIError)} (after content ${show(r.text)})`);
  eq(r.error.code, 'stream_interrupted', `error code (${describe(r.error, sdk.APIError)})`);
  eq(r.error.type, 'upstream_error', 'error type');
  ok(typeof r.error.message === 'string' && r.error.message.length > 0, 'the error has a message');
  eq(r.text, expectText, 'content delivered before the error');
  for (const c of r.chunks) eq(c.model, model, 'model of every chunk before the error');
}

/* Two tools; the mock names its calls after the request's tools, in order, with the arguments
 * {"city":"City<i>","n":<i>} and 10 completion tokens per call. */
const TOOLS = ['get_weather', 'get_time'].map((name) => ({ type: 'function', function: { name,
  parameters: { type: 'object', properties: { city: { type: 'string' }, n: { type: 'integer' } } } } }));
const TOOL_ARGS = [{ city: 'City0', n: 0 }, { city: 'City1', n: 1 }];

/* The tool calls of a streamed answer as they came, checked the OpenAI way: dense indices from 0,
 * id/type/name on each call's first delta only, arguments in the later ones. */
function checkToolDeltas(chunks) {
  const calls = [];
  for (const c of chunks) {
    for (const tc of c.choices?.[0]?.delta?.tool_calls ?? []) {
      const first = calls[tc.index] === undefined;
      if (first) {
        eq(tc.index, calls.length, 'a new call\'s index (dense, from 0, in order)');
        ok(tc.id && tc.type === 'function' && tc.function?.name, `the first delta of call ${tc.index} has id, type and name: ${show(tc)}`);
        calls[tc.index] = { id: tc.id, name: tc.function.name, arguments: tc.function.arguments ?? '' };
      } else {
        ok(tc.id === undefined && tc.type === undefined && tc.function?.name === undefined,
          `a later delta of call ${tc.index} repeats no id, type or name: ${show(tc)}`);
        calls[tc.index].arguments += tc.function?.arguments ?? '';
      }
    }
  }
  return calls;
}

const ANTHROPIC_TESTS = [
  ['anthropic: a sync completion comes back as a chat.completion', async ({ client }) => {
    const { data: r, response } = await client.chat.completions
      .create({ model: 'anth/tokens=5', messages: MESSAGES }).withResponse();
    eq(r.object, 'chat.completion', 'object');
    eq(r.model, 'anth/tokens=5', 'model');
    eq(r.choices[0].message.role, 'assistant', 'role');
    eq(r.choices[0].message.content, TEXT5, 'content');
    eq(r.choices[0].finish_reason, 'stop', 'finish_reason');
    eq({ prompt_tokens: r.usage?.prompt_tokens, completion_tokens: r.usage?.completion_tokens,
      total_tokens: r.usage?.total_tokens }, USAGE_1MSG_5TOK, 'usage');
    eq(response.headers.get('x-sluice-provider'), 'anth', 'x-sluice-provider');
  }],

  ['anthropic: a streamed completion comes back as chat.completion.chunks', async ({ client, sdk }) => {
    const stream = await client.chat.completions.create({ model: 'anth/tokens=5', messages: MESSAGES, stream: true });
    const r = await drain(stream);
    if (r.error) fail(`stream failed: ${describe(r.error, sdk.APIError)} (after content ${show(r.text)})`);
    eq(r.text, TEXT5, 'assembled content');
    eq(r.chunks[0]?.choices[0]?.delta?.role, 'assistant', 'the first chunk carries the role');
    eq(r.chunks.filter((c) => c.choices?.length).at(-1)?.choices[0].finish_reason, 'stop', 'finish_reason');
    for (const c of r.chunks) {
      eq(c.object, 'chat.completion.chunk', 'object of every chunk');
      eq(c.model, 'anth/tokens=5', 'model of every chunk');
      eq(c.id, r.chunks[0].id, 'one id for every chunk');
    }
    eq(r.chunks.filter((c) => c.usage != null).length, 0, 'chunks carrying usage (not asked for)');
  }],

  ['anthropic: streamed parallel tool calls assembled by the SDK, with usage', async ({ client }) => {
    const runner = client.chat.completions.stream({ model: 'anth/tool_calls=2', messages: MESSAGES, tools: TOOLS,
      stream_options: { include_usage: true } });
    const final = await runner.finalChatCompletion();
    const calls = final.choices[0].message.tool_calls ?? [];
    eq(calls.length, 2, `number of tool calls (${show(calls)})`);
    eq(calls.map((c) => c.function.name), ['get_weather', 'get_time'], 'names');
    eq(calls.map((c) => JSON.parse(c.function.arguments)), TOOL_ARGS, 'arguments');
    eq(calls.map((c) => c.id), ['toolu_mock_0', 'toolu_mock_1'], 'ids');
    eq(final.choices[0].finish_reason, 'tool_calls', 'finish_reason');
    eq({ prompt_tokens: final.usage?.prompt_tokens, completion_tokens: final.usage?.completion_tokens,
      total_tokens: final.usage?.total_tokens }, { prompt_tokens: 10, completion_tokens: 20, total_tokens: 30 }, 'usage');
  }],

  ['anthropic: streamed tool-call deltas are OpenAI\'s (dense indices, id and name once)', async ({ client, sdk }) => {
    const stream = await client.chat.completions.create({ model: 'anth/tool_calls=2+tokens=2', messages: MESSAGES,
      tools: TOOLS, stream: true, stream_options: { include_usage: true } });
    const r = await drain(stream);
    if (r.error) fail(`stream failed: ${describe(r.error, sdk.APIError)}`);
    eq(r.text, 'tok0 tok1', 'the text before the calls');
    const calls = checkToolDeltas(r.chunks);
    eq(calls.map((c) => c.name), ['get_weather', 'get_time'], 'names');
    eq(calls.map((c) => JSON.parse(c.arguments)), TOOL_ARGS, 'arguments, concatenated');
    const last = r.chunks.at(-1);
    eq(last?.choices, [], 'the usage chunk has no choices');
    eq(last?.usage?.completion_tokens, 22, 'completion tokens (2 text + 2 calls × 10)');
  }],

  ['anthropic: sync tool calls come back whole', async ({ client }) => {
    const r = await client.chat.completions.create({ model: 'anth/tool_calls=2', messages: MESSAGES, tools: TOOLS });
    const calls = r.choices[0].message.tool_calls ?? [];
    eq(r.choices[0].message.content, null, 'content');
    eq(calls.map((c) => [c.type, c.function.name]), [['function', 'get_weather'], ['function', 'get_time']], 'calls');
    eq(calls.map((c) => JSON.parse(c.function.arguments)), TOOL_ARGS, 'arguments');
    eq(r.choices[0].finish_reason, 'tool_calls', 'finish_reason');
  }],

  ['anthropic: a tool loop goes back upstream (tool_calls and tool results translated)', async ({ client }) => {
    const messages = [...MESSAGES,
      { role: 'assistant', content: null, tool_calls: [
        { id: 'toolu_mock_0', type: 'function', function: { name: 'get_weather', arguments: '{"city":"City0","n":0}' } },
        { id: 'toolu_mock_1', type: 'function', function: { name: 'get_time', arguments: '{"city":"City1","n":1}' } }] },
      { role: 'tool', tool_call_id: 'toolu_mock_0', content: '12°C' },
      { role: 'tool', tool_call_id: 'toolu_mock_1', content: 'noon' }];
    const r = await client.chat.completions.create({ model: 'anth/tokens=3', messages, tools: TOOLS });
    eq(r.choices[0].message.content, 'tok0 tok1 tok2', 'content');
    // user, assistant, one user turn holding both results: 3 Anthropic messages × 10 prompt tokens
    eq(r.usage?.prompt_tokens, 30, 'prompt tokens (the two tool results merged into one turn)');
  }],

  ['anthropic: thinking streams as reasoning_content', async ({ client, sdk }) => {
    const stream = await client.chat.completions.create({ model: 'anth/thinking=3+tokens=2', messages: MESSAGES, stream: true });
    const r = await drain(stream);
    if (r.error) fail(`stream failed: ${describe(r.error, sdk.APIError)}`);
    eq(r.chunks.map((c) => c.choices?.[0]?.delta?.reasoning_content ?? '').join(''), 'think0 think1 think2', 'reasoning');
    eq(r.text, 'tok0 tok1', 'content');
  }],

  ['anthropic: a parameter Anthropic cannot honour is a 400 naming it and the provider', async ({ client, sdk }) => {
    const e = await expectAPIError(sdk, client.chat.completions.create(
      { model: 'anth/tokens=5', messages: MESSAGES, n: 2 }), 400, sdk.BadRequestError);
    ok(e.message.includes("'n'") && e.message.includes('anth'), `the message names 'n' and the provider, got ${show(e.message)}`);
  }],

  ['anthropic: an overloaded_error after content raises stream_interrupted', async ({ client, sdk }) => {
    await expectInterrupted(sdk, client, 'anth/error_event_after=2', 'tok0 tok1');
  }],

  ['anthropic: a 529 answer is a 502 with the provider\'s message', async ({ client, sdk }) => {
    const e = await expectAPIError(sdk, client.chat.completions.create(
      { model: 'anth/status=529', messages: MESSAGES }), 502, sdk.InternalServerError);
    ok(e.message.includes('mock: HTTP 529 Overloaded'), `the message keeps the provider's, got ${show(e.message)}`);
  }],
];

/* Gemini-, Ollama- and Azure-type upstreams (the mock speaks generateContent/streamGenerateContent,
 * /api/chat NDJSON and Azure's deployment URL). */
const usageOf = (u) => ({ prompt_tokens: u?.prompt_tokens, completion_tokens: u?.completion_tokens, total_tokens: u?.total_tokens });

async function expectText(sdk, client, model, provider) {
  const { data: r, response } = await client.chat.completions.create({ model, messages: MESSAGES }).withResponse();
  eq(r.object, 'chat.completion', 'object');
  eq(r.model, model, 'model');
  eq(r.choices[0].message.content, TEXT5, 'content');
  eq(r.choices[0].finish_reason, 'stop', 'finish_reason');
  eq(usageOf(r.usage), USAGE_1MSG_5TOK, 'usage');
  eq(response.headers.get('x-sluice-provider'), provider, 'x-sluice-provider');
}

async function expectStreamedText(sdk, client, model) {
  const stream = await client.chat.completions.create({ model, messages: MESSAGES, stream: true,
    stream_options: { include_usage: true } });
  const r = await drain(stream);
  if (r.error) fail(`stream failed: ${describe(r.error, sdk.APIError)} (after content ${show(r.text)})`);
  eq(r.text, TEXT5, 'assembled content');
  eq(r.chunks.filter((c) => c.choices?.length).at(-1)?.choices[0].finish_reason, 'stop', 'finish_reason');
  for (const c of r.chunks) eq(c.model, model, 'model of every chunk');
  eq(r.chunks.filter((c) => c.usage != null).length, 1, 'chunks carrying usage');
  eq(usageOf(r.chunks.at(-1)?.usage), USAGE_1MSG_5TOK, 'usage on the last chunk');
}

async function expectStreamedToolCalls(sdk, client, model) {
  const stream = await client.chat.completions.create({ model, messages: MESSAGES, tools: TOOLS, stream: true,
    stream_options: { include_usage: true } });
  const r = await drain(stream);
  if (r.error) fail(`stream failed: ${describe(r.error, sdk.APIError)}`);
  const calls = checkToolDeltas(r.chunks);
  eq(calls.map((c) => c.name), ['get_weather', 'get_time'], 'names');
  eq(calls.map((c) => JSON.parse(c.arguments)), TOOL_ARGS, 'arguments');
  ok(calls[0].id !== calls[1].id && calls.every((c) => /^call_[A-Za-z0-9_-]+$/.test(c.id)), `two distinct call ids: ${show(calls.map((c) => c.id))}`);
  eq(r.chunks.filter((c) => c.choices?.length).at(-1)?.choices[0].finish_reason, 'tool_calls', 'finish_reason');
  eq(r.chunks.at(-1)?.choices, [], 'the usage chunk has no choices');
  eq(usageOf(r.chunks.at(-1)?.usage), { prompt_tokens: 10, completion_tokens: 20, total_tokens: 30 }, 'usage');
}

const TRANSLATED_TESTS = [
  ['gemini: a sync completion comes back as a chat.completion', async ({ client, sdk }) => {
    await expectText(sdk, client, 'gem/tokens=5', 'gem');
  }],

  ['gemini: a streamed completion (SSE) comes back as chat.completion.chunks with usage', async ({ client, sdk }) => {
    await expectStreamedText(sdk, client, 'gem/tokens=5');
  }],

  ['gemini: CRLF framing written 3 bytes at a time gives the same stream', async ({ client, sdk }) => {
    await expectStreamedText(sdk, client, 'gem/tokens=5+crlf+split=3');
  }],

  ['gemini: thought parts stream as reasoning_content', async ({ client, sdk }) => {
    const stream = await client.chat.completions.create({ model: 'gem/thinking=3+tokens=2', messages: MESSAGES, stream: true });
    const r = await drain(stream);
    if (r.error) fail(`stream failed: ${describe(r.error, sdk.APIError)}`);
    eq(r.chunks.map((c) => c.choices?.[0]?.delta?.reasoning_content ?? '').join(''), 'think0 think1 think2', 'reasoning');
    eq(r.text, 'tok0 tok1', 'content');
  }],

  ['gemini: streamed parallel tool calls assembled by the SDK into two calls, with usage', async ({ client }) => {
    const runner = client.chat.completions.stream({ model: 'gem/tool_calls=2', messages: MESSAGES, tools: TOOLS,
      stream_options: { include_usage: true } });
    const final = await runner.finalChatCompletion();
    const calls = final.choices[0].message.tool_calls ?? [];
    eq(calls.length, 2, `number of tool calls (${show(calls)})`);
    eq(calls.map((c) => c.function.name), ['get_weather', 'get_time'], 'names');
    eq(calls.map((c) => JSON.parse(c.function.arguments)), TOOL_ARGS, 'arguments');
    ok(calls[0].id && calls[1].id && calls[0].id !== calls[1].id, `two distinct ids: ${show(calls.map((c) => c.id))}`);
    eq(final.choices[0].finish_reason, 'tool_calls', 'finish_reason');
    eq(usageOf(final.usage), { prompt_tokens: 10, completion_tokens: 20, total_tokens: 30 }, 'usage');
  }],

  ['gemini: streamed tool-call deltas are OpenAI\'s (dense indices, id and name once)', async ({ client, sdk }) => {
    await expectStreamedToolCalls(sdk, client, 'gem/tool_calls=2');
  }],

  ['gemini: a tool loop goes back as functionCall / functionResponse turns', async ({ client }) => {
    const first = await client.chat.completions.create({ model: 'gem/tool_calls=2', messages: MESSAGES, tools: TOOLS });
    const calls = first.choices[0].message.tool_calls ?? [];
    eq(calls.length, 2, 'calls to answer');
    const messages = [...MESSAGES, first.choices[0].message,
      ...calls.map((c, i) => ({ role: 'tool', tool_call_id: c.id, content: i ? 'noon' : '{"temp":12}' }))];
    const r = await client.chat.completions.create({ model: 'gem/tokens=3', messages, tools: TOOLS });
    eq(r.choices[0].message.content, 'tok0 tok1 tok2', 'content');
    // user, model, one user turn holding both results: 3 contents × 10 prompt tokens
    eq(r.usage?.prompt_tokens, 30, 'prompt tokens (the two results in one turn)');
  }],

  ['gemini: an error event after content raises stream_interrupted', async ({ client, sdk }) => {
    await expectInterrupted(sdk, client, 'gem/error_event_after=2', 'tok0 tok1');
  }],

  ['gemini: RESOURCE_EXHAUSTED is a RateLimitError with Retry-After', async ({ client, sdk }) => {
    const e = await expectAPIError(sdk, client.chat.completions.create(
      { model: 'gem/status=429+retry_after=2', messages: MESSAGES }), 429, sdk.RateLimitError);
    eq(e.headers?.get('retry-after'), '2', 'retry-after');
  }],

  ['gemini: a parameter Gemini cannot honour is a 400 naming it and the provider', async ({ client, sdk }) => {
    const e = await expectAPIError(sdk, client.chat.completions.create(
      { model: 'gem/tokens=5', messages: MESSAGES, n: 2 }), 400, sdk.BadRequestError);
    ok(e.message.includes('n > 1') && e.message.includes("'gem'"), `the message names n and the provider, got ${show(e.message)}`);
  }],

  ['ollama: a sync completion comes back as a chat.completion', async ({ client, sdk }) => {
    await expectText(sdk, client, 'oll/tokens=5', 'oll');
  }],

  ['ollama: a streamed completion (NDJSON) comes back as chat.completion.chunks with usage', async ({ client, sdk }) => {
    await expectStreamedText(sdk, client, 'oll/tokens=5');
  }],

  ['ollama: NDJSON lines written 4 bytes at a time give the same stream', async ({ client, sdk }) => {
    await expectStreamedText(sdk, client, 'oll/tokens=5+split=4');
  }],

  ['ollama: streamed tool calls (done_reason stop) become tool_calls', async ({ client, sdk }) => {
    await expectStreamedToolCalls(sdk, client, 'oll/tool_calls=2');
  }],

  ['ollama: an error line after content raises stream_interrupted', async ({ client, sdk }) => {
    await expectInterrupted(sdk, client, 'oll/error_event_after=2', 'tok0 tok1');
  }],

  ['azure: a sync completion through the deployment URL', async ({ client, sdk }) => {
    await expectText(sdk, client, 'az/tokens=5', 'az');
  }],

  ['azure: a stream opening with the choices: [] filter chunk', async ({ client, sdk }) => {
    await expectStreamedText(sdk, client, 'az/tokens=5');
  }],
];

const TESTS = [
  // --- 1. sync completion ------------------------------------------------------------------
  ['sync: content is the mock\'s text', async ({ client }) => {
    const r = await client.chat.completions.create({ model: 'gpt-test', messages: MESSAGES });
    eq(r.object, 'chat.completion', 'object');
    eq(r.choices.length, 1, 'number of choices');
    eq(r.choices[0].message.role, 'assistant', 'role');
    eq(r.choices[0].message.content, TEXT5, 'content');
    eq(r.choices[0].finish_reason, 'stop', 'finish_reason');
  }],

  ['sync: model is the name the client used', async ({ client }) => {
    const r = await client.chat.completions.create({ model: 'gpt-test', messages: MESSAGES });
    eq(r.model, 'gpt-test', 'model');
  }],

  ['sync: usage counts prompt and completion tokens', async ({ client }) => {
    const r = await client.chat.completions.create({ model: 'gpt-test', messages: MESSAGES });
    ok(r.usage, `usage present (response: ${show(r).slice(0, 300)})`);
    eq({ prompt_tokens: r.usage.prompt_tokens, completion_tokens: r.usage.completion_tokens,
      total_tokens: r.usage.total_tokens }, USAGE_1MSG_5TOK, 'usage');
  }],

  ['sync: headers carry x-request-id, x-sluice-provider: mock, x-sluice-model', async ({ client }) => {
    const { data, response } = await client.chat.completions
      .create({ model: 'gpt-test', messages: MESSAGES }).withResponse();
    const id = response.headers.get('x-request-id');
    ok(id, 'x-request-id present');
    eq(data._request_id, id, 'the SDK\'s _request_id (from x-request-id)');
    eq(response.headers.get('x-sluice-provider'), 'mock', 'x-sluice-provider');
    ok(response.headers.get('x-sluice-model'), 'x-sluice-model present');
  }],

  ['sync: a provider/model name is passed through as the model', async ({ client }) => {
    const r = await client.chat.completions.create({ model: 'mock/tokens=3', messages: MESSAGES });
    eq(r.choices[0].message.content, 'tok0 tok1 tok2', 'content');
    eq(r.model, 'mock/tokens=3', 'model');
  }],

  // --- 2. streamed completion ----------------------------------------------------------------
  ['stream: the SDK assembles the mock\'s text', async ({ client, sdk }) => {
    const stream = await client.chat.completions.create({ model: 'gpt-test', messages: MESSAGES, stream: true });
    const r = await drain(stream);
    if (r.error) fail(`stream failed: ${describe(r.error, sdk.APIError)} (after content ${show(r.text)})`);
    eq(r.text, TEXT5, 'assembled content');
    const last = r.chunks.filter((c) => c.choices?.length).at(-1);
    eq(last?.choices[0].finish_reason, 'stop', 'finish_reason of the last choice chunk');
  }],

  ['stream: every chunk names the client\'s model', async ({ client, sdk }) => {
    const stream = await client.chat.completions.create({ model: 'gpt-test', messages: MESSAGES, stream: true });
    const r = await drain(stream);
    if (r.error) fail(`stream failed: ${describe(r.error, sdk.APIError)}`);
    ok(r.chunks.length > 0, 'some chunks');
    for (const c of r.chunks) {
      eq(c.object, 'chat.completion.chunk', 'object of every chunk');
      eq(c.model, 'gpt-test', 'model of every chunk');
    }
  }],

  ['stream: no usage chunk when the client did not ask for it', async ({ client, sdk }) => {
    const stream = await client.chat.completions.create({ model: 'gpt-test', messages: MESSAGES, stream: true });
    const r = await drain(stream);
    if (r.error) fail(`stream failed: ${describe(r.error, sdk.APIError)}`);
    const withUsage = r.chunks.filter((c) => c.usage != null);
    eq(withUsage.length, 0, 'chunks carrying usage');
    const noChoices = r.chunks.filter((c) => !c.choices?.length);
    eq(noChoices.length, 0, 'chunks with no choices (the usage chunk\'s shape)');
  }],

  ['stream: include_usage puts usage on the final chunk', async ({ client, sdk }) => {
    const stream = await client.chat.completions.create({ model: 'gpt-test', messages: MESSAGES, stream: true,
      stream_options: { include_usage: true } });
    const r = await drain(stream);
    if (r.error) fail(`stream failed: ${describe(r.error, sdk.APIError)}`);
    eq(r.text, TEXT5, 'assembled content');
    const last = r.chunks.at(-1);
    ok(last?.usage, `the final chunk carries usage (final chunk: ${show(last)})`);
    eq({ prompt_tokens: last.usage.prompt_tokens, completion_tokens: last.usage.completion_tokens,
      total_tokens: last.usage.total_tokens }, USAGE_1MSG_5TOK, 'usage');
    eq(last.choices, [], 'choices of the usage chunk');
    eq(r.chunks.filter((c) => c.usage != null).length, 1, 'chunks carrying usage');
  }],

  ['stream: SSE response headers', async ({ client }) => {
    const { data: stream, response } = await client.chat.completions
      .create({ model: 'gpt-test', messages: MESSAGES, stream: true }).withResponse();
    const h = (n) => response.headers.get(n);
    ok((h('content-type') || '').startsWith('text/event-stream'), `content-type is text/event-stream (got ${show(h('content-type'))})`);
    eq(h('cache-control'), 'no-cache', 'cache-control');
    eq(h('x-accel-buffering'), 'no', 'x-accel-buffering');
    ok(h('x-request-id'), 'x-request-id present');
    eq(h('x-sluice-provider'), 'mock', 'x-sluice-provider');
    ok(h('x-sluice-model'), 'x-sluice-model present');
    await drain(stream);
  }],

  ['stream helper: chat.completions.stream().finalChatCompletion()', async ({ client }) => {
    const runner = client.chat.completions.stream({ model: 'gpt-test', messages: MESSAGES });
    const deltas = [];
    runner.on('content', (delta) => deltas.push(delta));
    const final = await runner.finalChatCompletion();
    eq(final.choices[0].message.content, TEXT5, 'final content');
    eq(final.choices[0].finish_reason, 'stop', 'final finish_reason');
    eq(final.model, 'gpt-test', 'final model');
    eq(deltas.join(''), TEXT5, 'content events joined');
  }],

  // --- 3. provider errors as the SDK's APIError ------------------------------------------------
  ['error: provider 429 is a RateLimitError with the provider\'s message', async ({ client, sdk }) => {
    const e = await expectAPIError(sdk, client.chat.completions.create(
      { model: 'mock/status=429+retry_after=1', messages: MESSAGES }), 429, sdk.RateLimitError);
    ok(e.message.includes('mock: HTTP 429 Too Many Requests'), `the message keeps the provider's ("mock: HTTP 429 Too Many Requests"), got ${show(e.message)}`);
  }],

  ['error: provider 429 passes on Retry-After and names the provider', async ({ client, sdk }) => {
    const e = await expectAPIError(sdk, client.chat.completions.create(
      { model: 'mock/status=429+retry_after=1', messages: MESSAGES }), 429);
    eq(e.headers?.get('retry-after'), '1', 'retry-after');
    eq(e.headers?.get('x-sluice-provider'), 'mock', 'x-sluice-provider');
    ok(e.requestID, 'x-request-id present (the error\'s requestID)');
  }],

  ['error: provider 400 is a BadRequestError with the provider\'s message', async ({ client, sdk }) => {
    const e = await expectAPIError(sdk, client.chat.completions.create(
      { model: 'mock/status=400', messages: MESSAGES }), 400, sdk.BadRequestError);
    ok(e.message.includes('mock: HTTP 400 Bad Request'), `the message keeps the provider's ("mock: HTTP 400 Bad Request"), got ${show(e.message)}`);
  }],

  ['error: provider 503 becomes 502', async ({ client, sdk }) => {
    const e = await expectAPIError(sdk, client.chat.completions.create(
      { model: 'mock/status=503', messages: MESSAGES }), 502, sdk.InternalServerError);
    ok(e.message.includes('mock: HTTP 503 Service Unavailable'), `the message keeps the provider's ("mock: HTTP 503 Service Unavailable"), got ${show(e.message)}`);
    eq(e.headers?.get('x-sluice-provider'), 'mock', 'x-sluice-provider');
  }],

  ['error: an unknown model is a NotFoundError', async ({ client, sdk }) => {
    await expectAPIError(sdk, client.chat.completions.create(
      { model: 'no-such-model', messages: MESSAGES }), 404, sdk.NotFoundError);
  }],

  ['error: a streamed request failing before any content is a clean RateLimitError', async ({ client, sdk }) => {
    const e = await expectAPIError(sdk, client.chat.completions.create(
      { model: 'mock/status=429+retry_after=1', messages: MESSAGES, stream: true }), 429, sdk.RateLimitError);
    ok(e.message.includes('mock: HTTP 429 Too Many Requests'), `the message keeps the provider's, got ${show(e.message)}`);
  }],

  // --- 4. failures after the commit point: stream_interrupted, never a truncated success -------
  ['interrupted: a drop after 2 tokens raises stream_interrupted after exactly those tokens', async ({ client, sdk }) => {
    await expectInterrupted(sdk, client, 'mock/drop_after=2+tokens=10', 'tok0 tok1');
  }],

  ['interrupted: a malformed frame after 2 tokens raises stream_interrupted', async ({ client, sdk }) => {
    await expectInterrupted(sdk, client, 'mock/malformed_after=2', 'tok0 tok1');
  }],

  ['interrupted: a stream ending without finish or [DONE] raises stream_interrupted', async ({ client, sdk }) => {
    await expectInterrupted(sdk, client, 'mock/no_done', TEXT5);
  }],

  ['interrupted: a stall beyond timeout_idle after 2 tokens raises stream_interrupted', async ({ client, sdk }) => {
    const t0 = Date.now();
    await expectInterrupted(sdk, client, 'mock/stall_mid=5000+after=2+tokens=10', 'tok0 tok1');
    const ms = Date.now() - t0;
    ok(ms >= 1500 && ms < 4500, `interrupted after timeout_idle (2s), not before and not after the stall (5s): took ${ms}ms`);
  }],

  ['interrupted: the stream helper rejects finalChatCompletion() on a drop', async ({ client, sdk }) => {
    const runner = client.chat.completions.stream({ model: 'mock/drop_after=2+tokens=10', messages: MESSAGES });
    const deltas = [];
    runner.on('content', (delta) => deltas.push(delta));
    runner.on('error', () => {});   // the rejection below is what is checked
    let final;
    try {
      final = await runner.finalChatCompletion();
    } catch (e) {
      if (!(e instanceof sdk.APIError)) fail(`expected APIError, got ${describe(e, sdk.APIError)}`);
      eq(e.code, 'stream_interrupted', `error code (${describe(e, sdk.APIError)})`);
      eq(deltas.join(''), 'tok0 tok1', 'content events before the error');
      return;
    }
    fail(`finalChatCompletion() succeeded with a truncated answer: ${show(final?.choices?.[0]?.message?.content)}`);
  }],

  // --- 5. timeouts before the head --------------------------------------------------------------
  ['timeout: an upstream stalling before the head past timeout_first_byte is a 504', async ({ client, sdk }) => {
    const t0 = Date.now();
    const e = await expectAPIError(sdk, client.chat.completions.create(
      { model: 'mock/stall_head=9000', messages: MESSAGES }), 504);
    const ms = Date.now() - t0;
    ok(ms >= 4500 && ms < 8500, `504 after timeout_first_byte (5s): took ${ms}ms`);
    ok(/first.?byte|head/i.test(e.message), `the message names the phase (first byte / head), got ${show(e.message)}`);
  }],

  ['timeout: a streamed request stalling before the head is a 504', async ({ client, sdk }) => {
    const t0 = Date.now();
    await expectAPIError(sdk, client.chat.completions.create(
      { model: 'mock/stall_head=9000', messages: MESSAGES, stream: true }), 504);
    const ms = Date.now() - t0;
    ok(ms >= 4500 && ms < 8500, `504 after timeout_first_byte (5s): took ${ms}ms`);
  }],

  // --- 6. an Anthropic-type upstream (the mock speaks the Messages API at /v1/messages) ---------
  ...ANTHROPIC_TESTS,

  // --- 7. Gemini-, Ollama- and Azure-type upstreams ---------------------------------------------
  ...TRANSLATED_TESTS,

  // --- the router: a fallback before the commit point is invisible to the SDK ------------------
  ['fallback: a stream whose first target drops after its role chunk is one clean stream from the second', async ({ client, sdk }) => {
    const { data: stream, response } = await client.chat.completions
      .create({ model: 'gpt-fallback', messages: MESSAGES, stream: true }).withResponse();
    const r = await drain(stream);
    if (r.error) fail(`stream failed: ${describe(r.error, sdk.APIError)} (after content ${show(r.text)})`);
    eq(response.headers.get('x-sluice-attempts'), '2', 'x-sluice-attempts (role_then_drop, then the fallback)');
    eq(response.headers.get('x-sluice-model'), 'tokens=5', 'x-sluice-model (the fallback served)');
    eq(r.text, TEXT5, 'assembled content (no duplicate)');
    eq(r.chunks.filter((c) => c.choices?.[0]?.delta?.role).length, 1, 'chunks carrying the role');
    for (const c of r.chunks) eq(c.model, 'gpt-fallback', 'model of every chunk');
    eq(r.chunks.at(-1)?.choices[0]?.finish_reason, 'stop', 'finish_reason of the last chunk');
  }],
];

// ---------------------------------------------------------------------------------------------
// The runner

function oneLine(s) { return String(s).replace(/\s*\n\s*/g, ' | ').slice(0, 600); }

async function runTest(fn, ctx) {
  const ac = new AbortController();
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Failure(`timed out after ${TEST_TIMEOUT_MS}ms`)), TEST_TIMEOUT_MS);
  });
  const client = new ctx.sdk.OpenAI({
    baseURL: ctx.baseURL, apiKey: 'sk-e2e-test', maxRetries: 0, timeout: TEST_TIMEOUT_MS,
    // every request of the test, streamed bodies too, ends when the test does
    fetch: (url, init = {}) => fetch(url, {
      ...init, signal: init.signal ? AbortSignal.any([init.signal, ac.signal]) : ac.signal }),
  });
  try {
    await Promise.race([fn({ client, sdk: ctx.sdk }), timeout]);
  } finally {
    clearTimeout(timer);
    ac.abort();
  }
}

async function main() {
  const started = Date.now();
  let passed = 0, failed = 0;
  const report = (name, err) => {
    if (!err) { passed++; console.log(`ok - ${name}`); return; }
    failed++;
    console.log(`FAIL - ${name}: ${oneLine(err)}`);
  };
  const finish = (gw) => {
    if (failed && gw && gw.log) {
      const tail = gw.log.trimEnd().split('\n').slice(opts.verbose ? -200 : -25);
      console.log('# gateway log (tail):');
      for (const l of tail) console.log(`#   ${l}`);
    }
    console.log(`${passed} passed, ${failed} failed`);
    return failed ? 1 : 0;
  };

  const watchdog = setTimeout(() => {
    console.log(`FAIL - suite: watchdog: still running after ${WATCHDOG_MS}ms`);
    killAll();
    console.log(`${passed} passed, ${failed + 1} failed`);
    process.exit(1);
  }, WATCHDOG_MS);

  const tmp = mkdtempSync(path.join(os.tmpdir(), 'sluice-e2e-'));
  let mock = null, gw = null, sdk;
  try {
    ensureDeps();
    sdk = await import('openai');
    mock = await startMock();
    gw = await startGateway(tmp, mock.port);
  } catch (e) {
    report('setup', describe(e));
    for (const c of children) c.kill('SIGTERM');
    rmSync(tmp, { recursive: true, force: true });
    clearTimeout(watchdog);
    return finish(gw);
  }
  if (opts.verbose) console.log(`# openai ${sdk.OpenAI.VERSION ?? ''}, mock on ${mock.port}, gateway on ${gw.port}`);

  const ctx = { sdk, baseURL: `http://127.0.0.1:${gw.port}/v1` };
  const tests = TESTS.filter(([name]) => !opts.only || name.includes(opts.only));
  for (const [name, fn] of tests) {
    if (Date.now() - started > SUITE_DEADLINE_MS) { report(name, `not run: the suite passed its ${SUITE_DEADLINE_MS}ms deadline`); continue; }
    if (exited(gw.proc)) { report(name, `not run: the gateway exited (${gw.proc.exitCode ?? gw.proc.signalCode})`); continue; }
    try {
      await runTest(fn, ctx);
      report(name);
    } catch (e) {
      report(name, e instanceof Failure ? e.message : `unexpected ${describe(e, sdk.APIError)}`);
    }
  }

  // The gateway survived the suite and stops cleanly.
  const alive = !exited(gw.proc);
  gw.proc.kill('SIGTERM');
  mock.proc.kill('SIGTERM');
  const stopped = await waitExit(gw.proc, 5000);
  await waitExit(mock.proc, 2000);
  if (!alive) report('gateway: still running after the tests', `it exited during the suite (${gw.proc.exitCode ?? gw.proc.signalCode})`);
  else if (!stopped) report('gateway: exits 0 on SIGTERM', 'still running 5s after SIGTERM');
  else if (gw.proc.exitCode !== 0) report('gateway: exits 0 on SIGTERM', `exit ${gw.proc.exitCode ?? gw.proc.signalCode}`);
  else report('gateway: exits 0 on SIGTERM');
  killAll();
  rmSync(tmp, { recursive: true, force: true });
  clearTimeout(watchdog);
  return finish(gw);
}

process.exitCode = await main();
