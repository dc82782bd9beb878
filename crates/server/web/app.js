// The Switchboard web chat: rooms (`chat:<room>`), typing signals
// (`typing:<room>`), direct messages (`user:<id>`) over the plain WebSocket
// protocol through switchboard.js, and notifications over Server-Sent Events.
// No framework, no build step.

import { SwitchboardClient } from "./switchboard.js";

const DEFAULT_ROOMS = ["lobby", "random", "help"];
const HISTORY_LIMIT = 50;
const DM_HISTORY_LIMIT = 100;
const NOTIFICATION_HISTORY_LIMIT = 20;
/** At most one typing signal per this interval while typing. */
const TYPING_EVERY_MS = 2000;
/** How long "X is typing…" stays after the last signal. */
const TYPING_SHOWN_MS = 4000;
/** Messages of one author closer than this are grouped. */
const GROUP_MS = 5 * 60_000;
const PRESENCE_REFRESH_MS = 30_000;
const SESSION_KEY = "switchboard.session";

const $ = (id) => document.getElementById(id);

/** Creates an element: `h("li", {className: "x", dataset: {a: 1}}, child, "text")`. */
function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "dataset") Object.assign(node.dataset, v);
    else if (k === "className") node.className = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  node.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

// ---- session ---------------------------------------------------------------

/** A user id made from a display name: 1-64 of `a-z 0-9 - _ .`. */
export function userIdFrom(name) {
  const id = name
    .normalize("NFKD")
    .replace(/[\u0300-\u036f]/g, "")
    .toLowerCase()
    .trim()
    .replace(/\s+/g, "-")
    .replace(/[^a-z0-9._-]/g, "")
    .replace(/^[-.]+|[-.]+$/g, "")
    .slice(0, 64);
  return id;
}

/** A room name from what was typed, or "" when nothing usable is left. */
export function roomNameFrom(text) {
  return userIdFrom(text.replace(/^#/, "")).slice(0, 48);
}

function loadSession() {
  try {
    const s = JSON.parse(localStorage.getItem(SESSION_KEY));
    return s && typeof s.user === "string" && typeof s.name === "string" ? s : null;
  } catch {
    return null;
  }
}

function saveSession(s) {
  localStorage.setItem(SESSION_KEY, JSON.stringify(s));
}

function userPrefs(user) {
  try {
    return JSON.parse(localStorage.getItem(`switchboard.prefs.${user}`)) ?? {};
  } catch {
    return {};
  }
}

function saveUserPrefs(user, prefs) {
  localStorage.setItem(`switchboard.prefs.${user}`, JSON.stringify(prefs));
}

async function requestToken(user, name) {
  const res = await fetch("/api/dev/token", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ user, name }),
  });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) {
    const err = new Error(res.status === 404 ? "This server does not offer the development sign-in." : body.message || `sign-in failed (${res.status})`);
    err.code = body.code;
    throw err;
  }
  return body;
}

/** EventSource cannot send headers: the SSE endpoint reads this cookie. */
function setTokenCookie(token) {
  document.cookie = `token=${token}; path=/; SameSite=Strict`;
}

function clearTokenCookie() {
  document.cookie = "token=; path=/; SameSite=Strict; Max-Age=0";
}

function tokenExpiresSoon(token) {
  try {
    const payload = JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
    return typeof payload.exp === "number" && payload.exp * 1000 - Date.now() < 60_000;
  } catch {
    return true;
  }
}

// ---- formatting --------------------------------------------------------------

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dayTimeFormat = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "medium" });

function timeEl(ms) {
  const d = new Date(ms);
  const today = new Date().toDateString() === d.toDateString();
  return h("time", { datetime: d.toISOString(), title: fullFormat.format(d) }, (today ? timeFormat : dayTimeFormat).format(d));
}

function initials(name) {
  const parts = name.trim().split(/\s+/).filter(Boolean);
  return ((parts[0]?.[0] ?? "?") + (parts.length > 1 ? parts[parts.length - 1][0] : "")).toUpperCase();
}

/** One of 8 avatar colours, stable per user id. */
function hue(user) {
  let x = 2166136261; // FNV-1a
  for (const c of user ?? "") x = Math.imul(x ^ c.charCodeAt(0), 16777619) >>> 0;
  return `hue-${x % 8}`;
}

// ---- the chat ------------------------------------------------------------------

const chat = {
  me: null, // {user, name, token}
  client: null,
  events: null,
  /** room -> {name, joined, loaded, messages: Map offset -> msg, presence: Map, typing: Map, unread} */
  rooms: new Map(),
  /** peer id -> {peer, name, messages: Map offset -> msg, unread} */
  dms: new Map(),
  dmLoaded: false,
  /** user id -> display name from the server (presence, join) */
  names: new Map(),
  /** user id -> display name claimed in published data */
  claimedNames: new Map(),
  /** {kind: "room"|"dm", id} */
  current: null,
  /** key "channel~epoch~offset" -> notification */
  notifications: new Map(),
  lastTypingSent: 0,
  nextLocalId: 1,
};

const roomChannel = (room) => `chat:${room}`;
const typingChannel = (room) => `typing:${room}`;
const myChannel = () => `user:${chat.me.user}`;

/** A user's display name: the one the server vouches for (presence, join), else the one claimed in messages. */
function nameOf(user) {
  if (user === null || user === undefined) return "Server";
  return chat.names.get(user) ?? chat.claimedNames.get(user) ?? user;
}

/**
 * Remembers a display name. Names in presence and join signals come from
 * the server (the token's name); names inside published data are only
 * claims, used while the server's is unknown.
 */
function learnName(user, name, { verified }) {
  if (!user || typeof name !== "string" || !name.trim()) return;
  (verified ? chat.names : chat.claimedNames).set(user, name.trim().slice(0, 64));
}

function room(name) {
  let r = chat.rooms.get(name);
  if (!r) {
    r = { name, joined: false, loaded: false, messages: new Map(), presence: new Map(), typing: new Map(), unread: 0 };
    chat.rooms.set(name, r);
  }
  return r;
}

function dm(peer) {
  let d = chat.dms.get(peer);
  if (!d) {
    d = { peer, messages: new Map(), unread: 0 };
    chat.dms.set(peer, d);
  }
  return d;
}

function isCurrent(kind, id) {
  return chat.current?.kind === kind && chat.current?.id === id;
}

function savePrefs() {
  const joined = [...chat.rooms.values()].filter((r) => r.joined).map((r) => r.name);
  saveUserPrefs(chat.me.user, { joined, current: chat.current });
}

let alertTimer;
function showAlert(text) {
  const box = $("alerts");
  box.textContent = text;
  box.classList.add("visible");
  clearTimeout(alertTimer);
  alertTimer = setTimeout(() => box.classList.remove("visible"), 6000);
}

// ---- messages ------------------------------------------------------------------

/** A chat or DM message from a publication (or a history entry). */
function toMessage(p, time) {
  const data = p.data && typeof p.data === "object" ? p.data : { text: String(p.data ?? "") };
  const from = p.from ?? null;
  if (from && from !== chat.me.user) learnName(from, data.name, { verified: false });
  return {
    offset: Number(p.offset),
    from,
    name: from === chat.me.user ? chat.me.name : nameOf(from),
    text: typeof data.text === "string" ? data.text : JSON.stringify(data),
    time: time ?? p.time ?? p.time_ms ?? Date.now(),
    own: from === chat.me.user,
    system: from === null,
    to: typeof data.to === "string" ? data.to : null,
  };
}

function messageEl(m, prev) {
  const grouped =
    prev && !prev.dataset.pending && prev.dataset.from === String(m.from) && m.time - Number(prev.dataset.time) < GROUP_MS;
  const classes = ["msg", m.own ? "own" : "", m.system ? "system" : "", grouped ? "grouped" : "", m.pending ? "pending" : ""];
  const li = h("li", {
    className: classes.filter(Boolean).join(" "),
    dataset: { testid: "message", from: String(m.from), time: String(m.time), own: String(m.own), ...(m.pending ? { pending: "true", local: String(m.localId) } : { offset: String(m.offset) }) },
  });
  li.append(
    h("span", { className: `avatar ${hue(m.from)}`, "aria-hidden": "true" }, m.system ? "★" : initials(m.name)),
    h(
      "div",
      { className: "bubble" },
      h("p", { className: "meta" }, h("span", { className: "author", title: m.from ? `@${m.from}` : "Published by the server" }, m.own ? `${m.name} (you)` : m.name), " ", timeEl(m.time)),
      h("p", { className: "text", dataset: { testid: "message-text" } }, m.text),
      m.pending ? h("p", { className: "send-status", dataset: { testid: "send-status" } }, m.status ?? "Sending…") : null,
    ),
  );
  return li;
}

/** The messages of the open conversation, in offset order. */
function currentMessages() {
  if (!chat.current) return [];
  const src = chat.current.kind === "room" ? chat.rooms.get(chat.current.id)?.messages : chat.dms.get(chat.current.id)?.messages;
  return src ? [...src.values()].sort((a, b) => a.offset - b.offset) : [];
}

const pendingSends = new Map(); // localId -> {conv, text, status, retry}

function nearBottom(list) {
  return list.scrollHeight - list.scrollTop - list.clientHeight < 120;
}

function scrollToBottom() {
  const list = $("messages");
  list.scrollTop = list.scrollHeight;
}

/** Renders the whole open conversation (on opening it, or after a reload). */
function renderConversation() {
  const list = $("messages");
  list.setAttribute("aria-busy", "true");
  list.replaceChildren();
  let prev = null;
  for (const m of currentMessages()) {
    prev = messageEl(m, prev);
    list.append(prev);
  }
  for (const [localId, p] of pendingSends) {
    if (isCurrent(p.conv.kind, p.conv.id)) list.append(pendingEl(localId));
  }
  updateEmptyState();
  scrollToBottom();
  list.setAttribute("aria-busy", "false");
}

/** Adds one message to the open conversation's list, in offset order, once. */
function showMessage(m) {
  const list = $("messages");
  if (list.querySelector(`[data-offset="${m.offset}"]`)) return;
  const follow = nearBottom(list) || m.own;
  let before = list.querySelector("[data-pending]");
  for (const li of list.querySelectorAll("[data-offset]")) {
    if (Number(li.dataset.offset) > m.offset) {
      before = li;
      break;
    }
  }
  const prev = before ? before.previousElementSibling : list.lastElementChild?.dataset.pending ? null : list.lastElementChild;
  list.insertBefore(messageEl(m, prev), before);
  updateEmptyState();
  if (follow) scrollToBottom();
}

function updateEmptyState() {
  const empty = $("empty-state");
  const hasAny = $("messages").children.length > 0;
  empty.hidden = hasAny || !chat.current;
  if (!chat.current) return;
  if (chat.current.kind === "room") {
    const r = chat.rooms.get(chat.current.id);
    empty.textContent = r?.loaded ? `No messages in #${chat.current.id} yet. Say hello!` : "Loading messages…";
  } else {
    empty.textContent = `This is the beginning of your conversation with ${nameOf(chat.current.id)}.`;
  }
}

/** A message of room `r` arrived (live, replayed, or from history). */
function addRoomMessage(r, m, { live }) {
  if (r.messages.has(m.offset)) return;
  r.messages.set(m.offset, m);
  if (m.from) r.typing.delete(m.from);
  if (isCurrent("room", r.name)) {
    showMessage(m);
    renderTyping();
  } else if (live && !m.own) {
    r.unread += 1;
    renderRoomList();
  }
}

function addDm(m, { live }) {
  const peer = m.own ? m.to : m.from;
  if (!peer) return;
  const d = dm(peer);
  if (d.messages.has(m.offset)) return;
  d.messages.set(m.offset, m);
  if (isCurrent("dm", peer)) showMessage(m);
  else if (live && !m.own) d.unread += 1;
  renderDmList();
}

// ---- lists ------------------------------------------------------------------------

function convButton({ label, title, current, unread, dataset, onClick, muted }) {
  const badge = unread > 0 ? h("span", { className: "badge", dataset: { testid: "unread" } }, String(unread)) : null;
  const button = h(
    "button",
    {
      type: "button",
      className: `conv${current ? " current" : ""}${muted ? " not-joined" : ""}`,
      "aria-current": current ? "page" : null,
      "aria-label": `${title}${unread > 0 ? `, ${unread} unread` : ""}`,
      dataset,
    },
    label,
    badge,
  );
  button.addEventListener("click", onClick);
  return h("li", {}, button);
}

function renderRoomList() {
  const names = [...new Set([...DEFAULT_ROOMS, ...[...chat.rooms.values()].filter((r) => r.joined).map((r) => r.name)])];
  $("room-list").replaceChildren(
    ...names.map((name) => {
      const r = chat.rooms.get(name);
      const joined = Boolean(r?.joined);
      return convButton({
        label: h("span", { className: "conv-name" }, h("span", { className: "hash", "aria-hidden": "true" }, "#"), name),
        title: `#${name}${joined ? "" : " (not joined)"}`,
        current: isCurrent("room", name),
        unread: r?.unread ?? 0,
        muted: !joined,
        dataset: { testid: "room", room: name },
        onClick: () => joinRoom(name),
      });
    }),
  );
}

function renderDmList() {
  const peers = [...chat.dms.values()].sort((a, b) => lastTime(b) - lastTime(a));
  $("dm-list").replaceChildren(
    ...peers.map((d) =>
      convButton({
        label: h(
          "span",
          { className: "conv-name" },
          h("span", { className: `avatar tiny ${hue(d.peer)}`, "aria-hidden": "true" }, initials(nameOf(d.peer))),
          nameOf(d.peer),
        ),
        title: `Direct messages with ${nameOf(d.peer)}`,
        current: isCurrent("dm", d.peer),
        unread: d.unread,
        dataset: { testid: "dm", peer: d.peer },
        onClick: () => openConversation({ kind: "dm", id: d.peer }),
      }),
    ),
  );
  $("dm-empty").hidden = peers.length > 0;
}

function lastTime(d) {
  let t = 0;
  for (const m of d.messages.values()) t = Math.max(t, m.time);
  return t;
}

/** The people list: the open room's presence, or everyone in one's rooms in a DM. */
function renderPresence() {
  const heading = $("presence-heading");
  let people;
  if (chat.current?.kind === "room") {
    heading.textContent = `In #${chat.current.id}`;
    people = [...(chat.rooms.get(chat.current.id)?.presence.values() ?? [])];
  } else {
    heading.textContent = "People in your rooms";
    const all = new Map();
    for (const r of chat.rooms.values()) if (r.joined) for (const p of r.presence.values()) all.set(p.user, p);
    people = [...all.values()];
  }
  people.sort((a, b) => (a.user === chat.me.user ? -1 : b.user === chat.me.user ? 1 : nameOf(a.user).localeCompare(nameOf(b.user))));
  $("presence-list").replaceChildren(
    ...people.map((p) => {
      const me = p.user === chat.me.user;
      const name = me ? chat.me.name : nameOf(p.user);
      const conns = p.connections > 1 ? h("span", { className: "connections", dataset: { testid: "connections" }, title: `${p.connections} connections` }, `×${p.connections}`) : null;
      const content = [
        h("span", { className: `avatar small ${hue(p.user)}`, "aria-hidden": "true" }, initials(name)),
        h("span", { className: "person-name" }, name, me ? h("span", { className: "muted" }, " (you)") : null),
        h("span", { className: "online-dot", "aria-hidden": "true" }),
        conns,
      ];
      let body;
      if (me) {
        body = h("div", { className: "person" }, ...content);
      } else {
        body = h("button", { type: "button", className: "person", "aria-label": `Message ${name}${p.connections > 1 ? ` (${p.connections} connections)` : ""}` }, ...content);
        body.addEventListener("click", () => openConversation({ kind: "dm", id: p.user }));
      }
      return h("li", { dataset: { testid: "presence-item", user: p.user } }, body);
    }),
  );
  const n = people.length;
  if (chat.current?.kind === "room") $("conv-subtitle").textContent = `${n} ${n === 1 ? "person" : "people"} here`;
}

function renderTyping() {
  const box = $("typing");
  if (chat.current?.kind !== "room") {
    box.textContent = "";
    return;
  }
  const r = chat.rooms.get(chat.current.id);
  const now = Date.now();
  const names = [];
  for (const [user, t] of r?.typing ?? []) {
    if (t.until > now) names.push(t.name);
    else r.typing.delete(user);
  }
  box.textContent =
    names.length === 0 ? "" : names.length === 1 ? `${names[0]} is typing…` : names.length === 2 ? `${names[0]} and ${names[1]} are typing…` : `${names.length} people are typing…`;
}

// ---- conversations -------------------------------------------------------------------

function openConversation(conv) {
  chat.current = conv;
  $("composer").hidden = !conv;
  if (!conv) {
    $("conv-title").textContent = "No room open";
    $("conv-subtitle").textContent = "Join a room from the list to start chatting.";
    $("leave-room").hidden = true;
    document.title = "Switchboard";
  } else if (conv.kind === "room") {
    const r = room(conv.id);
    r.unread = 0;
    $("conv-title").textContent = `# ${conv.id}`;
    $("leave-room").hidden = false;
    $("composer-label").textContent = `Message #${conv.id}`;
    $("composer-input").placeholder = `Message #${conv.id}`;
  } else {
    const d = dm(conv.id);
    d.unread = 0;
    $("conv-title").textContent = nameOf(conv.id);
    $("conv-subtitle").textContent = `@${conv.id} · direct messages`;
    $("leave-room").hidden = true;
    $("composer-label").textContent = `Message ${nameOf(conv.id)}`;
    $("composer-input").placeholder = `Message ${nameOf(conv.id)}`;
  }
  if (conv) document.title = `${conv.kind === "room" ? `#${conv.id}` : nameOf(conv.id)} · Switchboard`;
  renderRoomList();
  renderDmList();
  renderPresence();
  renderConversation();
  renderTyping();
  savePrefs();
  document.body.classList.remove("show-nav", "show-details");
  syncToggles();
}

/** Joins a room (subscribes its chat and typing channels) and opens it. */
async function joinRoom(name, { open = true } = {}) {
  const r = room(name);
  const wasJoined = r.joined;
  r.joined = true;
  if (open) openConversation({ kind: "room", id: name });
  else renderRoomList();
  if (wasJoined) return;
  savePrefs();
  chat.client.subscribe(typingChannel(name), { recover: false }).catch(() => {});
  try {
    await chat.client.subscribe(roomChannel(name));
  } catch (err) {
    r.joined = false;
    savePrefs();
    renderRoomList();
    showAlert(`Could not join #${name}: ${err.message}`);
  }
}

async function leaveRoom(name) {
  const r = chat.rooms.get(name);
  if (!r) return;
  chat.rooms.delete(name);
  chat.client.unsubscribe(roomChannel(name)).catch(() => {});
  chat.client.unsubscribe(typingChannel(name)).catch(() => {});
  const next = [...chat.rooms.values()].find((x) => x.joined);
  openConversation(next ? { kind: "room", id: next.name } : null);
  $("room-list").querySelector("button")?.focus();
}

/** The last messages of a room, merged with what arrived live. */
async function loadRoomHistory(r) {
  try {
    const h = await chat.client.history(roomChannel(r.name), { limit: HISTORY_LIMIT });
    for (const p of h.publications) addRoomMessage(r, toMessage(p, p.time_ms), { live: false });
  } catch (err) {
    showAlert(`Could not load the history of #${r.name}: ${err.message}`);
  }
  r.loaded = true;
  if (isCurrent("room", r.name)) updateEmptyState();
}

async function loadDmHistory() {
  try {
    const h = await chat.client.history(myChannel(), { limit: DM_HISTORY_LIMIT });
    for (const p of h.publications) addDm(toMessage(p, p.time_ms), { live: false });
    chat.dmLoaded = true;
  } catch (err) {
    showAlert(`Could not load your direct messages: ${err.message}`);
  }
}

const presenceTimers = new Map();
async function refreshPresence(name) {
  clearTimeout(presenceTimers.get(name));
  presenceTimers.delete(name);
  const r = chat.rooms.get(name);
  if (!r?.joined) return;
  try {
    const list = await chat.client.presence(roomChannel(name));
    r.presence = new Map(list.map((p) => [p.user, p]));
    for (const p of list) if (p.user !== chat.me.user) learnName(p.user, p.name, { verified: true });
    renderPresence();
    renderDmList();
  } catch {
    /* refreshed at the next connection */
  }
}

/** Join/leave signals carry no connection counts: ask again shortly after. */
function schedulePresence(name) {
  if (presenceTimers.has(name)) return;
  presenceTimers.set(name, setTimeout(() => refreshPresence(name), 300));
}

// ---- sending ------------------------------------------------------------------------

/** The element of a message not acknowledged yet (or failed, with a Retry button). */
function pendingEl(localId) {
  const p = pendingSends.get(localId);
  const li = messageEl({ ...p.msg, localId, pending: true, status: p.status }, null);
  if (p.failed) {
    li.classList.add("failed");
    const retry = h("button", { type: "button", className: "link" }, "Retry");
    retry.addEventListener("click", () => {
      pendingSends.delete(localId);
      li.remove();
      send(p.msg.text, p.conv);
    });
    li.querySelector(".send-status").append(" ", retry);
  }
  return li;
}

async function send(text, conv) {
  const localId = chat.nextLocalId++;
  const msg = { from: chat.me.user, name: chat.me.name, text, time: Date.now(), own: true, system: false };
  const pending = { conv, msg, status: chat.client.state === "connected" ? "Sending…" : "Waiting for the connection…" };
  pendingSends.set(localId, pending);
  const list = $("messages");
  if (isCurrent(conv.kind, conv.id)) {
    list.append(pendingEl(localId));
    updateEmptyState();
    scrollToBottom();
  }
  try {
    let ack;
    if (conv.kind === "room") {
      ack = await chat.client.publish(roomChannel(conv.id), { text, name: chat.me.name });
    } else {
      const data = { text, to: conv.id, name: chat.me.name };
      if (conv.id !== chat.me.user) await chat.client.publish(`user:${conv.id}`, data);
      // The own copy, for one's other tabs and devices.
      ack = await chat.client.publish(myChannel(), data);
    }
    pendingSends.delete(localId);
    list.querySelector(`[data-local="${localId}"]`)?.remove();
    const sent = { ...msg, offset: ack.offset, to: conv.kind === "dm" ? conv.id : null };
    if (conv.kind === "dm") addDm(sent, { live: false });
    else if (chat.rooms.has(conv.id)) addRoomMessage(chat.rooms.get(conv.id), sent, { live: false });
  } catch (err) {
    pending.status = `Not sent: ${err.message}.`;
    pending.failed = true;
    list.querySelector(`[data-local="${localId}"]`)?.replaceWith(pendingEl(localId));
  }
}

function sendTyping() {
  if (chat.current?.kind !== "room" || chat.client.state !== "connected") return;
  const now = Date.now();
  if (now - chat.lastTypingSent < TYPING_EVERY_MS) return;
  chat.lastTypingSent = now;
  chat.client.publish(typingChannel(chat.current.id), { typing: true, name: chat.me.name }, { queue: false }).catch(() => {});
}

// ---- notifications (Server-Sent Events) -------------------------------------------------

function addNotification(channel, p, time) {
  const key = `${channel}~${p.epoch}~${p.offset}`;
  if (chat.notifications.has(key)) return;
  const data = p.data && typeof p.data === "object" ? p.data : { body: String(p.data ?? "") };
  const n = {
    key,
    channel,
    title: typeof data.title === "string" ? data.title : "Notification",
    body: typeof data.body === "string" ? data.body : typeof data.text === "string" ? data.text : "",
    time,
  };
  chat.notifications.set(key, n);
  const item = h(
    "li",
    { className: "notification", dataset: { testid: "notification", channel, time: String(time) } },
    h("p", { className: "meta" }, h("strong", { className: "title" }, n.title), " ", timeEl(time)),
    n.body ? h("p", { className: "body" }, n.body) : null,
    channel === "notifications:all" ? null : h("span", { className: "tag" }, "For you"),
  );
  const list = $("notifications");
  const after = [...list.children].find((li) => Number(li.dataset.time) < time);
  list.insertBefore(item, after ?? null);
  while (list.children.length > 50) list.lastElementChild.remove();
  $("notifications-empty").hidden = true;
}

const notificationChannels = () => ["notifications:all", `notifications:${chat.me.user}`];

/** The recent notifications (the SSE stream only brings new ones). */
async function loadNotifications() {
  for (const channel of notificationChannels()) {
    try {
      const h = await chat.client.history(channel, { limit: NOTIFICATION_HISTORY_LIMIT, queue: false });
      for (const p of h.publications) addNotification(channel, { ...p, epoch: h.epoch }, p.time_ms);
    } catch {
      /* loaded at the next connection */
    }
  }
}

let eventsRetry;
function openNotifications() {
  clearTimeout(eventsRetry);
  chat.events?.close();
  const query = notificationChannels().map((c) => `channel=${encodeURIComponent(c)}`).join("&");
  const es = new EventSource(`/events?${query}`);
  chat.events = es;
  const list = $("notifications");
  list.dataset.stream = "connecting";
  es.addEventListener("open", () => {
    if (chat.events === es) list.dataset.stream = "open";
  });
  es.addEventListener("message", (e) => {
    try {
      const p = JSON.parse(e.data);
      addNotification(p.channel, p, Date.now());
    } catch {
      /* not ours */
    }
  });
  es.addEventListener("unrecovered", () => loadNotifications());
  // A backend disconnected the user: stop (the WebSocket says so too).
  es.addEventListener("disconnect", () => {
    es.close();
    if (chat.events !== es) return;
    chat.events = null;
    list.dataset.stream = "closed";
  });
  es.addEventListener("error", () => {
    if (chat.events !== es) return;
    list.dataset.stream = es.readyState === EventSource.CLOSED ? "closed" : "connecting";
    // The browser retries on its own unless the answer was an HTTP error.
    if (es.readyState === EventSource.CLOSED) {
      eventsRetry = setTimeout(() => {
        if (chat.events === es && chat.client.state !== "closed") openNotifications();
      }, 3000 + Math.random() * 2000);
    }
  });
}

// ---- connection status ------------------------------------------------------------------

const STATUS_TEXT = {
  idle: "Connecting…",
  connecting: "Connecting…",
  connected: "Connected",
  reconnecting: "Reconnecting…",
  offline: "Offline",
  closed: "Disconnected",
};

function renderStatus(state) {
  const status = $("connection-status");
  status.dataset.state = state;
  status.textContent = STATUS_TEXT[state] ?? state;
  $("reconnect").hidden = state !== "closed";
  document.body.dataset.connection = state;
}

// ---- wiring -------------------------------------------------------------------------------

function syncToggles() {
  $("toggle-nav").setAttribute("aria-expanded", String(document.body.classList.contains("show-nav")));
  $("toggle-details").setAttribute("aria-expanded", String(document.body.classList.contains("show-details")));
}

function wireChatUi() {
  const input = $("composer-input");
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = input.value.trim();
    if (!text || !chat.current) return;
    input.value = "";
    autosize();
    chat.lastTypingSent = 0;
    send(text, { ...chat.current });
  });
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $("composer").requestSubmit();
    }
  });
  // Taller while the text has several lines (measured at the one-line height).
  const autosize = () => {
    input.classList.remove("multiline");
    if (input.value.includes("\n") || input.scrollHeight > input.clientHeight + 2) input.classList.add("multiline");
  };
  input.addEventListener("input", () => {
    autosize();
    if (input.value.trim()) sendTyping();
  });

  $("join-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const field = $("join-name");
    const name = roomNameFrom(field.value);
    if (!name) {
      $("join-error").textContent = "Use letters, digits, - _ or .";
      field.setAttribute("aria-invalid", "true");
      return;
    }
    $("join-error").textContent = "";
    field.removeAttribute("aria-invalid");
    field.value = "";
    joinRoom(name);
  });
  $("leave-room").addEventListener("click", () => {
    if (chat.current?.kind === "room") leaveRoom(chat.current.id);
  });
  $("signout").addEventListener("click", signOut);
  // After a disconnect by the server; the notifications reopen once connected.
  $("reconnect").addEventListener("click", () => chat.client.connect());
  for (const [button, cls] of [
    ["toggle-nav", "show-nav"],
    ["toggle-details", "show-details"],
  ]) {
    $(button).addEventListener("click", () => {
      const on = !document.body.classList.contains(cls);
      document.body.classList.remove("show-nav", "show-details");
      document.body.classList.toggle(cls, on);
      syncToggles();
    });
  }
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && (document.body.classList.contains("show-nav") || document.body.classList.contains("show-details"))) {
      document.body.classList.remove("show-nav", "show-details");
      syncToggles();
    }
  });
  setInterval(() => {
    if (chat.current?.kind === "room" && chat.client.state === "connected") refreshPresence(chat.current.id);
  }, PRESENCE_REFRESH_MS);
  setInterval(renderTyping, 1000);
}

function wireClient(client) {
  client.on("state", (state) => {
    renderStatus(state);
    if (state === "connected") {
      loadNotifications();
      if (!chat.events || chat.events.readyState === EventSource.CLOSED) openNotifications();
    }
  });
  client.on("subscribed", ({ channel }) => {
    const [ns, name] = [channel.slice(0, channel.indexOf(":")), channel.slice(channel.indexOf(":") + 1)];
    if (ns === "chat" && chat.rooms.get(name)?.joined) {
      const r = chat.rooms.get(name);
      if (!r.loaded) loadRoomHistory(r);
      refreshPresence(name);
    } else if (channel === myChannel() && !chat.dmLoaded) {
      loadDmHistory();
    }
  });
  client.on("reset", ({ channel }) => {
    // The history no longer reaches back to what we saw: reload.
    if (channel.startsWith("chat:")) {
      const r = chat.rooms.get(channel.slice(5));
      if (!r) return;
      r.messages.clear();
      r.loaded = false;
      if (isCurrent("room", r.name)) renderConversation();
      loadRoomHistory(r);
    } else if (channel === myChannel()) {
      for (const d of chat.dms.values()) d.messages.clear();
      chat.dmLoaded = false;
      if (chat.current?.kind === "dm") renderConversation();
      loadDmHistory();
    }
  });
  client.on("message", (p) => {
    if (p.channel.startsWith("chat:")) {
      const r = chat.rooms.get(p.channel.slice(5));
      if (r) addRoomMessage(r, toMessage(p), { live: true });
    } else if (p.channel.startsWith("typing:")) {
      if (!p.from || p.from === chat.me.user || !p.data?.typing) return;
      const r = chat.rooms.get(p.channel.slice(7));
      if (!r) return;
      learnName(p.from, p.data.name, { verified: false });
      r.typing.set(p.from, { name: nameOf(p.from), until: Date.now() + TYPING_SHOWN_MS });
      if (isCurrent("room", r.name)) renderTyping();
    } else if (p.channel === myChannel()) {
      addDm(toMessage(p), { live: true });
    }
  });
  for (const kind of ["join", "leave"]) {
    client.on(kind, ({ channel, user, name }) => {
      if (!channel.startsWith("chat:")) return;
      const r = chat.rooms.get(channel.slice(5));
      if (!r) return;
      if (user !== chat.me.user) learnName(user, name, { verified: true });
      if (kind === "join") r.presence.set(user, { user, name, connections: r.presence.get(user)?.connections ?? 1 });
      else {
        r.presence.delete(user);
        r.typing.delete(user);
      }
      renderPresence();
      schedulePresence(r.name);
    });
  }
  client.on("error", (err) => {
    if (err.code === "disconnected_by_server") showAlert("You were disconnected by the server.");
    else if (err.channel) showAlert(`${err.channel}: ${err.message}`);
  });
}

function startChat(session) {
  chat.me = session;
  if (session.token) setTokenCookie(session.token);
  $("signin-view").hidden = true;
  $("chat-view").hidden = false;
  $("me-name").textContent = session.name;
  $("me-id").textContent = `@${session.user}`;
  const avatar = $("me-avatar");
  avatar.textContent = initials(session.name);
  avatar.classList.add(hue(session.user));

  const client = new SwitchboardClient("/ws", {
    getToken: async ({ refresh }) => {
      if (!refresh && chat.me.token && !tokenExpiresSoon(chat.me.token)) return chat.me.token;
      const { token } = await requestToken(chat.me.user, chat.me.name);
      chat.me.token = token;
      saveSession(chat.me);
      setTokenCookie(token);
      return token;
    },
  });
  chat.client = client;
  // For tests and the curious: the page's client.
  window.switchboard = client;
  wireClient(client);
  wireChatUi();
  renderStatus(client.state);

  const prefs = userPrefs(session.user);
  const joined = Array.isArray(prefs.joined) && prefs.joined.length ? prefs.joined : [DEFAULT_ROOMS[0]];
  client.connect();
  client.subscribe(myChannel()).catch((err) => showAlert(`Direct messages are unavailable: ${err.message}`));
  for (const name of joined) if (roomNameFrom(name) === name) joinRoom(name, { open: false });
  const current = prefs.current;
  if (current?.kind === "dm" && typeof current.id === "string") openConversation({ kind: "dm", id: current.id });
  else joinRoom(current?.kind === "room" && chat.rooms.get(current.id)?.joined ? current.id : joined[0]);
  // The notifications stream opens once connected (with a fresh token cookie).
}

function signOut() {
  chat.client?.close();
  chat.events?.close();
  clearTokenCookie();
  localStorage.removeItem(SESSION_KEY);
  location.reload();
}

function showSignIn() {
  $("chat-view").hidden = true;
  $("signin-view").hidden = false;
  const form = $("signin-form");
  const input = $("signin-name");
  const hint = $("signin-hint");
  const error = $("signin-error");
  input.addEventListener("input", () => {
    const id = userIdFrom(input.value);
    hint.textContent = input.value.trim()
      ? id
        ? `You will appear as “${input.value.trim()}” (user id @${id}).`
        : "Your user id will be made up (the name has no usable letters)."
      : "Pick a display name; your user id is made from it.";
  });
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const name = input.value.trim().slice(0, 64);
    if (!name) {
      error.textContent = "Please enter a name.";
      input.setAttribute("aria-invalid", "true");
      input.focus();
      return;
    }
    input.removeAttribute("aria-invalid");
    error.textContent = "";
    const user = userIdFrom(name) || `user-${Math.random().toString(36).slice(2, 8)}`;
    const button = form.querySelector("button");
    button.disabled = true;
    try {
      const { token, user: id } = await requestToken(user, name);
      const session = { user: id ?? user, name, token };
      saveSession(session);
      startChat(session);
    } catch (err) {
      error.textContent = err.message || "Sign-in failed.";
    } finally {
      button.disabled = false;
    }
  });
  input.focus();
}

// Another tab signed out (or in as someone else): follow it.
window.addEventListener("storage", (e) => {
  if (e.key !== SESSION_KEY) return;
  const next = loadSession();
  if (next?.user !== chat.me?.user) location.reload();
});

const existing = loadSession();
if (existing) startChat(existing);
else showSignIn();
