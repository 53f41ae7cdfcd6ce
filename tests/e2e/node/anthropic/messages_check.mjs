// The official `@anthropic-ai/sdk` Node package against a running server: messages.create,
// messages.stream, a forced tool call answered with a tool_result, countTokens, and the
// exception class of an unknown model. Prints one JSON object with what each check saw; the
// pytest test (tests/e2e/test_anthropic_e2e.py) makes the assertions. A check that throws
// records its error instead of stopping the others.
//
// usage: node messages_check.mjs BASE_URL CHAT_MODEL

import Anthropic from "@anthropic-ai/sdk";

const [baseURL, model] = process.argv.slice(2);
const client = new Anthropic({ baseURL, apiKey: "not-needed", maxRetries: 0, timeout: 120_000 });
const ask = (content) => [{ role: "user", content }];

const WEATHER = {
  name: "get_weather",
  description: "Current weather in a city",
  input_schema: { type: "object", additionalProperties: false, required: ["city"],
                  properties: { city: { type: "string" } } },
};

const checks = {
  async create() {
    const m = await client.messages.create({
      model, max_tokens: 12, temperature: 0, system: "Be brief.", messages: ask("Say hello.") });
    return { type: m.type, role: m.role, model: m.model, blocks: m.content.map((b) => b.type),
             text: m.content[0]?.text, stop_reason: m.stop_reason, usage: m.usage };
  },

  async stream() {
    const events = [];
    const deltas = [];
    const stream = client.messages.stream({
      model, max_tokens: 16, temperature: 0, messages: ask("Count to five.") });
    stream.on("streamEvent", (event) => events.push(event.type));
    stream.on("text", (text) => deltas.push(text));
    const final = await stream.finalMessage();
    return { events, deltas, text: final.content[0]?.text, stop_reason: final.stop_reason,
             usage: final.usage };
  },

  async tools() {
    const first = await client.messages.create({
      model, max_tokens: 64, temperature: 0, tools: [WEATHER],
      tool_choice: { type: "tool", name: "get_weather" },
      messages: ask("What is the weather in Paris?") });
    const call = first.content.find((b) => b.type === "tool_use");
    const second = await client.messages.create({
      model, max_tokens: 24, temperature: 0, tools: [WEATHER],
      messages: [
        ...ask("What is the weather in Paris?"),
        { role: "assistant", content: first.content },
        { role: "user", content: [{ type: "tool_result", tool_use_id: call.id,
                                    content: "18 degrees and sunny" }] },
      ] });
    return { stop_reason: first.stop_reason, call: { id: call.id, name: call.name,
             input: call.input }, answer_blocks: second.content.map((b) => b.type),
             answer_stop: second.stop_reason };
  },

  async count() {
    const counted = await client.messages.countTokens({ model, messages: ask("Say hello.") });
    const made = await client.messages.create({ model, max_tokens: 1, messages: ask("Say hello.") });
    return { counted: counted.input_tokens,
             billed: made.usage.input_tokens + (made.usage.cache_read_input_tokens ?? 0) };
  },

  async not_found() {
    try {
      await client.messages.create({ model: "claude-no-such-model", max_tokens: 5,
                                     messages: ask("hi") });
      return { threw: false };
    } catch (error) {
      return { threw: true, class: error.constructor.name,
               is_not_found: error instanceof Anthropic.NotFoundError, status: error.status,
               type: error.error?.error?.type, message: error.error?.error?.message };
    }
  },
};

const results = {};
for (const [name, check] of Object.entries(checks)) {
  try {
    results[name] = { ok: true, ...(await check()) };
  } catch (error) {
    results[name] = { ok: false, error: String(error?.stack ?? error) };
  }
}
console.log(JSON.stringify(results));
