// The official `openai` Node package against /v1/responses: plain, streamed, a required
// function call, retrieve, delete and the NotFoundError after it. Prints one JSON line.
import OpenAI from "openai";

const [, , baseUrl, model, apiKey] = process.argv;
const client = new OpenAI({ baseURL: `${baseUrl}/v1`, apiKey, maxRetries: 0 });
const out = {};

const plain = await client.responses.create({
  model, input: "Say hello.", max_output_tokens: 20, temperature: 0,
});
out.plain = { id: plain.id, status: plain.status, text: plain.output_text, usage: plain.usage };

const stream = await client.responses.create({
  model, input: "Count to three.", stream: true, max_output_tokens: 20, temperature: 0,
});
const types = [];
const numbers = [];
let deltas = "";
let final = null;
for await (const event of stream) {
  types.push(event.type);
  numbers.push(event.sequence_number);
  if (event.type === "response.output_text.delta") deltas += event.delta;
  if (event.type === "response.completed" || event.type === "response.incomplete") {
    final = event.response;
  }
}
out.stream = { types, numbers, deltas, finalText: final?.output[0]?.content[0]?.text };

const called = await client.responses.create({
  model, input: "What is the weather in Paris?", tool_choice: "required",
  max_output_tokens: 60, temperature: 0,
  tools: [{
    type: "function", name: "get_weather", strict: true,
    parameters: {
      type: "object", properties: { city: { type: "string" } }, required: ["city"],
      additionalProperties: false,
    },
  }],
});
const call = called.output.find((item) => item.type === "function_call");
out.call = call ? { name: call.name, arguments: call.arguments, call_id: call.call_id } : null;

out.retrieved = (await client.responses.retrieve(plain.id)).id;
await client.responses.delete(plain.id);
try {
  await client.responses.retrieve(plain.id);
  out.notFound = false;
} catch (error) {
  out.notFound = error instanceof OpenAI.NotFoundError;
}
console.log(JSON.stringify(out));
