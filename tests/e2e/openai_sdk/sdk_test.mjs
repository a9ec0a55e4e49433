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

// The Responses and Conversations APIs (docs/api.md, "The Responses API"):
// a conversation is a session; a stored response a durable turn of it.

await check('responses: stored, without and then with a conversation', async () => {
  const r = await client.responses.create({ model: 'gpt-sdk', input: 'hello responses', instructions: 'be brief' });
  assert.equal(r.object, 'response');
  assert.equal(r.status, 'completed');
  assert.match(r.id, /^resp_[0-9a-f]{48}$/);
  assert.equal(r.output[0].content[0].text, '[gpt-sdk|n=1|sys=be brief] hello responses');
  assert.equal(r.output_text, '[gpt-sdk|n=1|sys=be brief] hello responses');
  assert.ok(r.usage.total_tokens > 0);
  // Its conversation holds the turn; the next response there sees it.
  const conv = r.conversation.id;
  const next = await client.responses.create({ model: 'gpt-sdk', input: 'and again', conversation: conv });
  assert.equal(next.output_text, '[gpt-sdk|n=3|sys=] and again');
  const again = await client.responses.retrieve(r.id);
  assert.equal(again.status, 'completed');
  assert.equal(again.output[0].content[0].text, r.output_text);
});

await check('responses: a background stream dropped after 8 events resumes with retrieve(stream, starting_after)', async () => {
  const conv = await client.conversations.create({ metadata: { topic: 'sdk' } });
  assert.match(conv.id, /^conv_[0-9a-f]{32}$/);
  assert.deepEqual(conv.metadata, { topic: 'sdk' });
  const stream = await client.responses.create({
    model: 'fake-drip-20-100',
    input: 'long answer',
    conversation: conv.id,
    background: true,
    stream: true,
  });
  let id = null;
  let last = -1;
  let text = '';
  let seen = 0;
  for await (const ev of stream) {
    assert.equal(ev.sequence_number, last + 1);
    last = ev.sequence_number;
    if (ev.type === 'response.created') id = ev.response.id;
    if (ev.type === 'response.output_text.delta') text += ev.delta;
    if (++seen === 8) break; // The SDK aborts the connection.
  }
  assert.ok(id);
  const resumed = await client.responses.retrieve(id, { stream: true, starting_after: last });
  let final = null;
  for await (const ev of resumed) {
    assert.equal(ev.sequence_number, last + 1, `event ${ev.type} out of order`);
    last = ev.sequence_number;
    if (ev.type === 'response.output_text.delta') text += ev.delta;
    if (ev.type === 'response.completed') final = ev.response;
  }
  assert.ok(final, 'the resumed stream ends with response.completed');
  assert.equal(final.status, 'completed');
  assert.equal(text, final.output[0].content[0].text);
  assert.ok(text.length > 0);
  // The conversation's items: the user's message and the whole answer.
  const items = [];
  for await (const item of client.conversations.items.list(conv.id, { order: 'asc', limit: 1 })) items.push(item);
  assert.deepEqual(items.map((i) => i.role), ['user', 'assistant']);
  assert.equal(items[0].content[0].text, 'long answer');
  assert.equal(items[1].content[0].text, text);
  const newestFirst = await client.conversations.items.list(conv.id);
  assert.deepEqual(newestFirst.data.map((i) => i.role), ['assistant', 'user']);
});

await check('responses: background without a stream, polled; a cancel stops one', async () => {
  let r = await client.responses.create({ model: 'fake-drip-10-50', input: 'poll me', background: true });
  assert.equal(r.status, 'in_progress');
  while (r.status === 'in_progress' || r.status === 'queued') {
    await new Promise((done) => setTimeout(done, 100));
    r = await client.responses.retrieve(r.id);
  }
  assert.equal(r.status, 'completed');
  assert.ok(r.output[0].content[0].text.length > 0);
  let c = await client.responses.create({ model: 'fake-drip-100-100', input: 'cancel me', background: true });
  await new Promise((done) => setTimeout(done, 300));
  await client.responses.cancel(c.id);
  const t0 = Date.now();
  while (c.status === 'in_progress') {
    await new Promise((done) => setTimeout(done, 50));
    c = await client.responses.retrieve(c.id);
  }
  assert.equal(c.status, 'cancelled');
  assert.ok(Date.now() - t0 < 3000, 'the cancel took effect within 3 s');
});

await check('responses: what is not supported is a typed error; an unknown id is 404', async () => {
  await assert.rejects(
    client.responses.create({ model: 'gpt-sdk', input: 'x', tools: [{ type: 'web_search' }] }),
    (e) => e instanceof OpenAI.BadRequestError && e.code === 'unsupported_parameter',
  );
  await assert.rejects(
    client.responses.retrieve('resp_' + '0'.repeat(48)),
    (e) => e instanceof OpenAI.NotFoundError,
  );
  await assert.rejects(client.conversations.retrieve('conv_nope'), (e) => e instanceof OpenAI.NotFoundError);
});

console.log(`openai ${VERSION}: ${passed} checks passed`);
