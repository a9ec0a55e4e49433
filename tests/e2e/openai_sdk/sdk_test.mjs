// The official openai npm package, unchanged, as a client of chatllm's
// OpenAI-compatible endpoint through nginx: non-streaming and streaming,
// without and with a session, and its errors. Run by ../openai_sdk_test.sh
// against the test stack (models gpt-* go to tests/fake-llm, which answers
// "[MODEL|n=MESSAGES|sys=SYSTEM] LAST USER MESSAGE").

import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { VERSION } from 'openai/version';

const base = process.env.CHATLLM_URL;
assert.ok(base, 'CHATLLM_URL is not set');
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: process.env.CHATLLM_API_KEY, maxRetries: 0, timeout: 20000 });

let passed = 0;
async function check(name, fn) {
  await fn();
  passed += 1;
  console.log(`ok ${passed} - ${name}`);
}

async function collect(stream) {
  let text = '';
  let usage = null;
  let finish = null;
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    if (chunk.usage) usage = chunk.usage;
    const choice = chunk.choices[0];
    if (!choice) continue;
    if (choice.delta?.content) text += choice.delta.content;
    if (choice.finish_reason) finish = choice.finish_reason;
  }
  return { text, usage, finish };
}

async function newSession(body) {
  const res = await fetch(`${base}/v1/sessions`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${process.env.CHATLLM_API_KEY}` },
    body: JSON.stringify(body),
  });
  assert.equal(res.status, 201);
  return (await res.json()).id;
}

async function history(id) {
  const res = await fetch(`${base}/v1/sessions/${id}/messages?limit=100`, {
    headers: { Authorization: `Bearer ${process.env.CHATLLM_API_KEY}` },
  });
  assert.equal(res.status, 200);
  return (await res.json()).data;
}

await check('non-streaming, stateless', async () => {
  const r = await client.chat.completions.create({
    model: 'gpt-sdk',
    messages: [
      { role: 'system', content: 'be brief' },
      { role: 'user', content: 'hello' },
      { role: 'assistant', content: 'hi' },
      { role: 'user', content: 'hello from the sdk' },
    ],
  });
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(r.choices[0].message.content, '[gpt-sdk|n=3|sys=be brief] hello from the sdk');
  assert.equal(r.choices[0].finish_reason, 'stop');
  assert.ok(r.usage.total_tokens > 0);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
});

await check('streaming, stateless, with usage', async () => {
  const stream = await client.chat.completions.create({
    model: 'gpt-sdk',
    stream: true,
    stream_options: { include_usage: true },
    messages: [{ role: 'user', content: 'stream this please' }],
  });
  const { text, usage, finish } = await collect(stream);
  assert.equal(text, '[gpt-sdk|n=1|sys=] stream this please');
  assert.equal(finish, 'stop');
  assert.ok(usage && usage.completion_tokens > 0);
});

await check('non-streaming and streaming on a session (header, then body field)', async () => {
  const id = await newSession({ system_prompt: 'stored prompt' });
  const first = await client.chat.completions.create(
    { model: 'gpt-sdk', messages: [{ role: 'user', content: 'first turn' }] },
    { headers: { 'X-Session-Id': id } },
  );
  assert.equal(first.choices[0].message.content, '[gpt-sdk|n=1|sys=stored prompt] first turn');
  assert.equal(first.chatllm.session_id, id);
  // The stored history is the context: the SDK sends only the new message.
  const stream = await client.chat.completions.create({
    model: 'gpt-sdk',
    stream: true,
    session_id: id,
    messages: [{ role: 'user', content: 'second turn' }],
  });
  const { text } = await collect(stream);
  assert.equal(text, '[gpt-sdk|n=3|sys=stored prompt] second turn');
  const stored = await history(id);
  assert.deepEqual(stored.map((m) => [m.seq, m.role]), [[1, 'user'], [2, 'assistant'], [3, 'user'], [4, 'assistant']]);
  assert.equal(stored[3].content, text);
  assert.equal(stored[3].provider, 'fake_openai');
});

await check('errors become the SDK\'s typed errors', async () => {
  await assert.rejects(
    client.chat.completions.create({ model: 'no-such-model', messages: [{ role: 'user', content: 'x' }] }),
    (e) => e instanceof OpenAI.NotFoundError && e.status === 404 && e.code === 'model_not_found',
  );
  await assert.rejects(
    client.chat.completions.create({ model: 'gpt-status-500', messages: [{ role: 'user', content: 'x' }] }),
    (e) => e instanceof OpenAI.APIError && e.status === 502 && e.code === 'provider_unavailable',
  );
  await assert.rejects(
    client.chat.completions.create({ model: 'gpt-sdk', messages: [{ role: 'user', content: 'x' }], n: 2 }),
    (e) => e instanceof OpenAI.BadRequestError && e.code === 'unsupported_parameter',
  );
  // A provider failing mid-stream: the SDK raises from the iteration.
  const stream = await client.chat.completions.create({
    model: 'gpt-midfail',
    stream: true,
    messages: [{ role: 'user', content: 'a b c d e' }],
  });
  await assert.rejects(collect(stream), (e) => e instanceof OpenAI.APIError && /mid-answer/.test(e.message));
});

console.log(`openai ${VERSION}: ${passed} checks passed`);
