// The official `openai` Node package against a running server: chat (plain, streaming, JSON
// mode, a required tool call), embeddings (the SDK's default base64, decoded by the SDK), a
// transcription of our own speech (plain and streamed) and an error (an unknown model).
// Prints one JSON object with what each check saw; the pytest test
// (tests/e2e/test_node_client.py) makes the assertions. A check that throws records its error
// instead of stopping the others.
//
// usage: node client_check.mjs BASE_URL CHAT_MODEL EMBEDDING_MODEL

import OpenAI, { NotFoundError, toFile } from "openai";

const [baseURL, chatModel, embeddingModel] = process.argv.slice(2);
const client = new OpenAI({ baseURL: `${baseURL}/v1`, apiKey: "not-needed", maxRetries: 0,
                            timeout: 120_000 });
const ask = (content) => [{ role: "user", content }];

const WEATHER_TOOL = {
  type: "function",
  function: {
    name: "get_weather",
    description: "Current weather in a city",
    parameters: { type: "object", additionalProperties: false, required: ["city"],
                  properties: { city: { type: "string" } } },
  },
};

const checks = {
  async models() {
    const page = await client.models.list();
    return { ids: page.data.map((m) => m.id) };
  },

  async chat() {
    const r = await client.chat.completions.create({
      model: chatModel, messages: ask("Say hello."), max_tokens: 12, temperature: 0 });
    const choice = r.choices[0];
    return { object: r.object, model: r.model, content: choice.message.content,
             role: choice.message.role, finish_reason: choice.finish_reason, usage: r.usage };
  },

  async stream() {
    const stream = await client.chat.completions.create({
      model: chatModel, messages: ask("Count to five."), max_tokens: 16, temperature: 0,
      stream: true, stream_options: { include_usage: true } });
    const deltas = [];
    let finish = null;
    let usage = null;
    let chunks = 0;
    const ids = new Set();
    for await (const chunk of stream) {
      chunks += 1;
      ids.add(chunk.id);
      if (chunk.usage) usage = chunk.usage;
      for (const choice of chunk.choices) {
        if (choice.delta.content) deltas.push(choice.delta.content);
        if (choice.finish_reason) finish = choice.finish_reason;
      }
    }
    return { chunks, deltas, text: deltas.join(""), finish_reason: finish, usage,
             ids: ids.size };
  },

  async json_mode() {
    const r = await client.chat.completions.create({
      model: chatModel, messages: ask('Return a JSON object with a key "greeting".'),
      max_tokens: 100, temperature: 0, response_format: { type: "json_object" } });
    const choice = r.choices[0];
    const parsed = JSON.parse(choice.message.content); // throws, failing the check, if invalid
    return { content: choice.message.content, finish_reason: choice.finish_reason,
             is_object: parsed !== null && typeof parsed === "object" && !Array.isArray(parsed) };
  },

  async tools() {
    const r = await client.chat.completions.create({
      model: chatModel, messages: ask("What is the weather in Paris?"), max_tokens: 60,
      temperature: 0, tools: [WEATHER_TOOL], tool_choice: "required" });
    const choice = r.choices[0];
    const calls = choice.message.tool_calls ?? [];
    return { finish_reason: choice.finish_reason, content: choice.message.content,
             calls: calls.map((c) => ({ id: c.id, type: c.type, name: c.function.name,
                                        arguments: JSON.parse(c.function.arguments) })) };
  },

  async embeddings() {
    // No encoding_format: the SDK asks for base64 and decodes it to numbers itself.
    const r = await client.embeddings.create({
      model: embeddingModel, input: ["The cat sat on the mat.", "A dog barked."] });
    const vectors = r.data.map((d) => Array.from(d.embedding));
    return { object: r.object, model: r.model, count: r.data.length,
             indexes: r.data.map((d) => d.index),
             lengths: vectors.map((v) => v.length),
             norms: vectors.map((v) => Math.sqrt(v.reduce((s, x) => s + x * x, 0))),
             all_numbers: vectors.every((v) => v.every(Number.isFinite)),
             usage: r.usage };
  },

  async transcription() {
    // Our own voice says a sentence; Whisper hears it back, whole and streamed.
    const speech = await client.audio.speech.create({
      model: "tts-1", voice: "alloy", input: "The quick brown fox jumps over the lazy dog.",
      response_format: "wav" });
    const audio = Buffer.from(await speech.arrayBuffer());
    const r = await client.audio.transcriptions.create({
      model: "whisper-1", file: await toFile(audio, "speech.wav") });
    const stream = await client.audio.transcriptions.create({
      model: "whisper-1", file: await toFile(audio, "speech.wav"), stream: true });
    const types = [], deltas = [];
    let done = null;
    for await (const event of stream) {
      types.push(event.type);
      if (event.type === "transcript.text.delta") deltas.push(event.delta);
      if (event.type === "transcript.text.done") done = event.text;
    }
    return { text: r.text, usage: r.usage, types, deltas, done };
  },

  async not_found() {
    try {
      await client.chat.completions.create({
        model: "no-such-model", messages: ask("Hello"), max_tokens: 4 });
      return { threw: false };
    } catch (err) {
      return { threw: true, class: err?.constructor?.name,
               is_not_found: err instanceof NotFoundError, status: err?.status,
               code: err?.code ?? null, type: err?.type ?? null,
               message: String(err?.message ?? err) };
    }
  },
};

const results = {};
for (const [name, check] of Object.entries(checks)) {
  try {
    results[name] = { ok: true, ...(await check()) };
  } catch (err) {
    results[name] = { ok: false, error: `${err?.constructor?.name}: ${err?.message ?? err}`,
                      status: err?.status ?? null };
  }
}
process.stdout.write(JSON.stringify(results) + "\n");
