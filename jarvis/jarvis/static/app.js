// Jarvis web chat: stored conversations from /api, answers streamed as SSE chunks.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { conversation: null, busy: false, abort: null };

function apiKey() { return localStorage.getItem("jarvis-api-key"); }

async function api(path, options = {}) {
  const headers = { "Content-Type": "application/json", ...(options.headers || {}) };
  if (apiKey()) headers["Authorization"] = "Bearer " + apiKey();
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) {
    const key = prompt("This Jarvis server needs its API key:");
    if (key) { localStorage.setItem("jarvis-api-key", key.trim()); return api(path, options); }
  }
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try { message = (await response.json()).error.message; } catch (e) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

function notice(text, isError) {
  const line = document.createElement("div");
  line.textContent = text;
  if (isError) line.className = "error";
  $("notices").appendChild(line);
}

async function loadConversations() {
  const list = (await (await api("/api/conversations")).json()).data;
  const ul = $("conversations");
  ul.replaceChildren();
  for (const c of list) {
    const li = document.createElement("li");
    li.textContent = c.title || "(empty)";
    li.title = c.id;
    li.dataset.id = c.id;
    if (state.conversation === c.id) li.className = "active";
    li.onclick = () => openConversation(c.id);
    ul.appendChild(li);
  }
}

function addMessage(role, text) {
  const div = document.createElement("div");
  div.className = "message " + role;
  const body = document.createElement("div");
  body.className = "text";
  body.textContent = text || "";
  div.appendChild(body);
  $("messages").appendChild(div);
  div.scrollIntoView({ block: "end" });
  return div;
}

function thinkingBlock(div) {
  let details = div.querySelector(".thinking");
  if (!details) {
    details = document.createElement("details");
    details.className = "thinking";
    details.innerHTML = "<summary>Thinking</summary><div class='thinking-text'></div>";
    div.insertBefore(details, div.firstChild);
  }
  return details.querySelector(".thinking-text");
}

function addMeta(div, message) {
  const meta = document.createElement("div");
  meta.className = "meta";
  const stats = document.createElement("span");
  if (message.generated_tokens) {
    stats.textContent = `${message.generated_tokens} tokens · ${(message.tokens_per_second || 0).toFixed(1)} tok/s`;
  }
  meta.appendChild(stats);
  if (message.id) {
    for (const [label, rating] of [["👍", 1], ["👎", -1]]) {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = label;
      b.title = rating > 0 ? "Good answer" : "Bad answer";
      if (message.rating === rating) b.classList.add("chosen");
      b.onclick = async () => {
        await api(`/api/messages/${message.id}/feedback`, { method: "POST", body: JSON.stringify({ rating }) });
        meta.querySelectorAll("button").forEach((x) => x.classList.remove("chosen"));
        b.classList.add("chosen");
      };
      meta.appendChild(b);
    }
  }
  div.appendChild(meta);
}

async function openConversation(id) {
  const c = await (await api("/api/conversations/" + encodeURIComponent(id))).json();
  state.conversation = c.id;
  $("messages").replaceChildren();
  $("notices").replaceChildren();
  $("title").textContent = c.title || "New chat";
  for (const m of c.messages) {
    const div = addMessage(m.role, m.content);
    if (m.reasoning) thinkingBlock(div).textContent = m.reasoning;
    if (m.role === "assistant") addMeta(div, m);
  }
  await loadConversations();
}

function newChat() {
  state.conversation = null;
  $("messages").replaceChildren();
  $("notices").replaceChildren();
  $("title").textContent = "New chat";
  loadConversations();
  $("input").focus();
}

function setBusy(busy) {
  state.busy = busy;
  $("send").disabled = busy;
  $("stop").hidden = !busy;
}

// Reads an SSE body, calling onEvent with each decoded `data:` JSON (until [DONE]).
async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of block.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return;
        onEvent(JSON.parse(data));
      }
    }
  }
}

async function send(text) {
  if (state.busy || !text.trim()) return;
  setBusy(true);
  $("notices").replaceChildren();
  const userDiv = addMessage("user", text);
  const div = addMessage("assistant", "");
  div.dataset.state = "streaming";
  div.dataset.chunks = "0";
  const body = div.querySelector(".text");
  let saved = {};
  state.abort = new AbortController();
  try {
    if (!state.conversation) {
      const c = await (await api("/api/conversations", { method: "POST", body: "{}" })).json();
      state.conversation = c.id;
    }
    const response = await api(`/api/conversations/${state.conversation}/messages`, {
      method: "POST",
      body: JSON.stringify({ content: text }),
      signal: state.abort.signal,
    });
    await readEvents(response, (event) => {
      if (event.error) throw new Error(event.error.message);
      if (event.object === "jarvis.turn") {
        $("model").textContent = event.model;
        userDiv.dataset.id = event.user_message_id;
        (event.notices || []).forEach((n) => notice(n));
      } else if (event.object === "jarvis.saved") {
        saved = { ...event, id: event.message_id };
      } else if (event.choices && event.choices.length) {
        const delta = event.choices[0].delta || {};
        if (delta.content) body.textContent += delta.content;
        if (delta.reasoning_content) thinkingBlock(div).textContent += delta.reasoning_content;
        if (delta.content || delta.reasoning_content) div.dataset.chunks = String(Number(div.dataset.chunks) + 1);
        div.scrollIntoView({ block: "end" });
      }
    });
    addMeta(div, saved);
    div.dataset.id = saved.id || "";
  } catch (e) {
    if (e.name !== "AbortError") notice(e.message, true);
  } finally {
    div.dataset.state = "done";
    setBusy(false);
    await loadConversations().catch(() => {});
  }
}

$("composer").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("input").value;
  $("input").value = "";
  send(text);
});
$("input").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("composer").requestSubmit(); }
});
$("stop").onclick = () => state.abort && state.abort.abort();
$("new-chat").onclick = newChat;
loadConversations().catch((e) => notice(e.message, true));
