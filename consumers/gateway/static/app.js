// routeyard's chat page: one turn at a time against the gateway's streaming chat completions.
// Protocol (design16.md): POST /v1/chat/completions with stream: true answers with server-sent
// events, `data: {chat.completion.chunk}` each; the first carries routeyard.decision, content
// chunks carry routeyard.agent, the last (finish_reason "stop") the whole response; `data: [DONE]`.
// Every piece of data reaches the page through textContent: nothing received is parsed as HTML.
"use strict";

const KEY_STORE = "routeyard.apiKey";
const MAX_PENDING = 1 << 20; // characters of one unfinished event before the stream is given up
const EVENT_END = /\r\n\r\n|\n\n|\r\r/; // a blank line ends an event (any of SSE's line ends)

const $ = (id) => document.getElementById(id);
const state = { conversation: null, controller: null };

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function setConversation(id) {
  state.conversation = id || null;
  $("conversation").textContent = id ? "conversation " + id : "new conversation";
}

// ---- one turn in the log -------------------------------------------------------------------

function newTurn(text) {
  const node = el("section", "turn");
  node.append(el("p", "user", text));
  const decision = el("div", "decision pending", "routing…");
  const replies = el("div", "replies");
  const footer = el("p", "footer");
  node.append(decision, replies, footer);
  $("log").append(node);
  node.scrollIntoView({ block: "end" });
  return { node, decision, replies, footer, byAgent: new Map() };
}

function replyBox(turn, agent) {
  const name = agent || "routeyard";
  let box = turn.byAgent.get(name);
  if (!box) {
    const node = el("article", "reply");
    node.dataset.agent = name;
    const body = el("div", "content");
    node.append(el("h3", "agent", name), body);
    turn.replies.append(node);
    box = { node, body };
    turn.byAgent.set(name, box);
  }
  return box;
}

function formatScores(scores) {
  return Object.entries(scores)
    .sort((a, b) => b[1] - a[1])
    .slice(0, 5)
    .map(([agent, score]) => agent + " " + Number(score).toFixed(2))
    .join(", ");
}

function fact(label, value) {
  const node = el("span", "fact");
  node.append(el("b", null, label + " "), document.createTextNode(String(value)));
  return node;
}

function showDecision(turn, decision) {
  const routes = Array.isArray(decision.routes) ? decision.routes.map(String) : [];
  const box = turn.decision;
  box.className = "decision";
  box.replaceChildren();
  box.dataset.agents = routes.join(",");
  const agents = el("span", "agents");
  if (routes.length === 0) agents.append(el("span", "chip none", "no route"));
  for (const name of routes) agents.append(el("span", "chip", name));
  box.append(agents);
  if (decision.mode) box.append(fact("mode", decision.mode));
  if (decision.engine) box.append(fact("engine", decision.engine));
  if (typeof decision.confidence === "number") box.append(fact("confidence", decision.confidence.toFixed(2)));
  else if (decision.scores && typeof decision.scores === "object") box.append(fact("scores", formatScores(decision.scores)));
  if (typeof decision.latency_ms === "number") box.append(fact("decided in", decision.latency_ms.toFixed(1) + " ms"));
  if (decision.reason) box.append(el("p", "why", decision.reason));
}

// The final chunk holds the durable record: it wins over what the chunks built (lost chunks,
// agents that did not stream, error replies).
function showResponse(turn, response, text) {
  if (response.decision) showDecision(turn, { ...response.decision, routes: response.routes, mode: response.mode });
  else if (turn.decision.classList.contains("pending")) {
    turn.decision.className = "decision";
    turn.decision.textContent = "no routing decision";
  }
  if (!(response.replies || []).length && text) replyBox(turn, null).body.textContent = text; // no_route, rejected
  for (const reply of response.replies || []) {
    const box = replyBox(turn, reply.agent);
    box.node.dataset.status = reply.status || "";
    if (reply.status === "ok" && typeof reply.content === "string") box.body.textContent = reply.content;
    else if (reply.error) box.body.textContent = reply.error;
  }
  const late = response.timed_out || [];
  for (const agent of late) replyBox(turn, agent).node.dataset.status = "timed_out";
  let line = "status " + (response.status || "unknown");
  if (late.length) line += " · timed out: " + late.join(", ");
  if (response.reason) line += " · " + response.reason;
  if (response.event_id) line += " · event " + response.event_id;
  turn.footer.textContent = line;
  turn.node.dataset.status = response.status || "unknown";
}

function failTurn(turn, message) {
  if (turn.decision.classList.contains("pending")) turn.decision.textContent = "";
  turn.decision.classList.remove("pending");
  turn.footer.textContent = message;
  turn.footer.classList.add("error");
  turn.node.dataset.status = "error";
}

// ---- the stream ----------------------------------------------------------------------------

function onChunk(turn, chunk) {
  if (chunk.error) throw new Error(chunk.error.message || "the gateway reported an error");
  const extension = chunk.routeyard || {};
  if (extension.conversation_id) setConversation(extension.conversation_id);
  const choice = (chunk.choices || [])[0] || {};
  const message = choice.delta || choice.message || {};
  const text = typeof message.content === "string" ? message.content : "";
  if (choice.finish_reason) return showResponse(turn, extension, text);
  if (extension.decision) showDecision(turn, extension.decision);
  if (text) replyBox(turn, extension.agent).body.append(document.createTextNode(text));
}

// Splits the bytes into events (blank line between them) and hands each `data:` payload on.
async function readEvents(body, onData) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let pending = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return false;
    pending += decoder.decode(value, { stream: true });
    let end;
    while ((end = EVENT_END.exec(pending))) {
      const data = pending.slice(0, end.index).split(/\r\n|\r|\n/)
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(line.startsWith("data: ") ? 6 : 5))
        .join("\n");
      pending = pending.slice(end.index + end[0].length);
      if (data === "[DONE]") return true;
      if (data) onData(data);
    }
    if (pending.length > MAX_PENDING) throw new Error("the gateway sent an event over 1 MiB");
  }
}

async function errorLine(response) {
  let text = await response.text();
  try {
    const parsed = JSON.parse(text);
    text = (parsed.error && parsed.error.message) || parsed.detail || text;
  } catch (_) { /* not JSON: show the text */ }
  text = String(text).split("\n")[0].slice(0, 300);
  return "HTTP " + response.status + (text ? ": " + text : "");
}

function requestHeaders() {
  const headers = { "Content-Type": "application/json", Accept: "text/event-stream" };
  const key = localStorage.getItem(KEY_STORE);
  if (key) headers.Authorization = "Bearer " + key;
  if (state.conversation) headers["X-Conversation-Id"] = state.conversation;
  return headers;
}

async function send(text) {
  const turn = newTurn(text);
  state.controller = new AbortController();
  busy(true);
  try {
    const response = await fetch("v1/chat/completions", {
      method: "POST",
      headers: requestHeaders(),
      body: JSON.stringify({ model: "routeyard", stream: true, messages: [{ role: "user", content: text }] }),
      signal: state.controller.signal,
    });
    if (!response.ok) return failTurn(turn, await errorLine(response));
    const minted = response.headers.get("X-Conversation-Id");
    if (minted) setConversation(minted);
    if (!(response.headers.get("Content-Type") || "").startsWith("text/event-stream")) {
      return onChunk(turn, await response.json()); // a gateway that answered without streaming
    }
    const finished = await readEvents(response.body, (data) => onChunk(turn, JSON.parse(data)));
    if (!finished) failTurn(turn, "the stream ended before [DONE]");
    else if (!turn.node.dataset.status) failTurn(turn, "the stream ended without a response");
  } catch (error) {
    failTurn(turn, error.name === "AbortError" ? "stopped" : String(error.message || error));
  } finally {
    busy(false);
  }
}

// ---- the controls --------------------------------------------------------------------------

function busy(on) {
  $("send").disabled = on;
  $("stop").hidden = !on;
  document.body.dataset.busy = on ? "1" : "";
  if (!on) state.controller = null;
}

function submit() {
  const box = $("message");
  const text = box.value.trim();
  if (!text || state.controller) return;
  box.value = "";
  send(text);
}

function start() {
  const key = $("api-key");
  key.value = localStorage.getItem(KEY_STORE) || "";
  key.addEventListener("change", () => localStorage.setItem(KEY_STORE, key.value.trim()));
  $("new-conversation").addEventListener("click", () => setConversation(null));
  $("stop").addEventListener("click", () => state.controller && state.controller.abort());
  $("composer").addEventListener("submit", (event) => { event.preventDefault(); submit(); });
  $("message").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); submit(); }
  });
  const q = new URLSearchParams(location.search).get("q");
  if (q) { $("message").value = q; submit(); }
}

start();
