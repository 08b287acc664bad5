// The sandbox page. All markup comes rendered (and escaped) from the server; this script only
// places it, and acts through /sandbox/control/*, which sends countersign real signed Slack
// requests. A server-sent event stream says when to redraw.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { workspace: null, user: null, channel: null, thread: null, view: null, inbox: null, inboxes: [] };

async function getJson(url) {
  const response = await fetch(url);
  return response.json();
}

async function postJson(url, body) {
  const response = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  return response.json();
}

function toast(text) {
  const box = $("toast");
  box.textContent = text;
  box.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.hidden = true; }, 5000);
}

function localTimes(root) {
  for (const time of root.querySelectorAll("time[data-unix]")) {
    const date = new Date(Number(time.dataset.unix) * 1000);
    if (Number.isNaN(date.getTime())) continue;
    time.title = date.toISOString();
    time.textContent = time.textContent === ""
      ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
      : date.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
  }
}

function listItem(label, channel) {
  const item = document.createElement("li");
  item.textContent = label;
  item.dataset.channel = channel;
  item.classList.toggle("active", channel === state.channel);
  item.addEventListener("click", () => select(channel));
  return item;
}

function drawSidebar() {
  const w = state.workspace;
  $("team").textContent = w.team.name;
  const channels = $("channels");
  channels.replaceChildren(...w.channels.filter((c) => !c.user).map((c) => listItem("# " + c.name, c.id)));
  const dm = w.channels.find((c) => c.user === state.user);
  $("dms").replaceChildren(...(dm ? [listItem("countersign", dm.id)] : []));
  const current = w.channels.find((c) => c.id === state.channel);
  $("channel-name").textContent = state.inbox
    ? "Agent inbox: " + state.inbox
    : current ? (current.user ? "countersign (direct message)" : "# " + current.name) : "";
  drawInboxes();
}

// The demo agents' inboxes (serve --demo): what each agent's callback endpoint received.
function drawInboxes() {
  $("inboxes-heading").hidden = state.inboxes.length === 0;
  $("inboxes").replaceChildren(...state.inboxes.map((inbox) => {
    const item = document.createElement("li");
    item.textContent = inbox.agent + (inbox.count ? " (" + inbox.count + ")" : "");
    item.classList.toggle("active", inbox.agent === state.inbox);
    item.addEventListener("click", () => selectInbox(inbox.agent));
    return item;
  }));
}

function select(channel) {
  state.channel = channel;
  state.inbox = null;
  state.thread = null;
  history.replaceState(null, "", "#" + channel + "?as=" + state.user);
  drawSidebar();
  refresh();
}

function selectInbox(agent) {
  state.inbox = agent;
  state.channel = null;
  state.thread = null;
  history.replaceState(null, "", "#inbox:" + agent + "?as=" + state.user);
  drawSidebar();
  refresh();
}

async function refreshInboxes() {
  const { inboxes } = await getJson("/sandbox/ui/inboxes");
  state.inboxes = inboxes;
  drawInboxes();
}

async function refresh() {
  await refreshInboxes();
  $("composer").hidden = !!state.inbox;
  if (state.inbox) {
    const inbox = await getJson("/sandbox/ui/inbox?" + new URLSearchParams({ agent: state.inbox }));
    $("messages").innerHTML = inbox.html || "";
    localTimes($("messages"));
    $("thread").hidden = true;
    await refreshModal();
    return;
  }
  if (!state.channel) return;
  const query = new URLSearchParams({ channel: state.channel, viewer: state.user });
  const main = await getJson("/sandbox/ui/conversation?" + query);
  const list = $("messages");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.innerHTML = main.html;
  localTimes(list);
  if (atBottom) list.scrollTop = list.scrollHeight;
  if (state.thread) {
    query.set("thread", state.thread);
    const thread = await getJson("/sandbox/ui/conversation?" + query);
    $("thread-messages").innerHTML = thread.html;
    localTimes($("thread-messages"));
  }
  $("thread").hidden = !state.thread;
  await refreshModal();
}

async function refreshModal() {
  const { view } = await getJson("/sandbox/ui/view?" + new URLSearchParams({ user: state.user }));
  const open = !!view;
  $("overlay").hidden = !open && $("confirm").hidden;
  $("modal").hidden = !open;
  if (!open) { state.view = null; return; }
  if (state.view === view.id) return; // keep what the person is typing
  state.view = view.id;
  $("modal-title").innerHTML = view.title;
  $("modal-body").innerHTML = view.html;
  $("modal-close").innerHTML = view.close;
  $("modal-submit").innerHTML = view.submit || "Submit";
  $("modal-submit").hidden = !view.submit;
}

function askConfirmation(wrap) {
  const template = wrap.querySelector(".bk-confirm");
  if (!template) return Promise.resolve(true);
  return new Promise((resolve) => {
    const box = $("confirm");
    box.innerHTML = template.innerHTML;
    const ok = box.querySelector(".bk-confirm-ok");
    const deny = box.querySelector(".bk-confirm-deny");
    const actions = document.createElement("div");
    actions.className = "actions";
    actions.append(deny, ok);
    box.append(actions);
    box.hidden = false;
    $("overlay").hidden = false;
    const done = (answer) => { box.hidden = true; $("overlay").hidden = $("modal").hidden; resolve(answer); };
    ok.addEventListener("click", () => done(true));
    deny.addEventListener("click", () => done(false));
  });
}

async function click(button) {
  const article = button.closest("article.msg");
  if (!(await askConfirmation(button.closest(".bk-button-wrap")))) return;
  button.disabled = true;
  try {
    const result = await postJson("/sandbox/control/click", {
      user: state.user,
      channel: article.dataset.channel,
      ts: article.dataset.ts,
      action_id: button.dataset.actionId,
      block_id: button.dataset.blockId || null,
    });
    if (result.error) toast(result.error);
    else if (result.status < 200 || result.status > 299) toast("countersign answered HTTP " + result.status);
  } finally {
    button.disabled = false;
    refresh();
  }
}

function modalValues() {
  const values = {};
  for (const field of $("modal-form").querySelectorAll("[name]")) {
    const [block, action] = field.name.split("::");
    values[block] = values[block] || {};
    if (field.type === "checkbox") {
      const list = values[block][action] || [];
      if (field.checked) list.push(field.value);
      values[block][action] = list;
    } else if (field.type === "radio") {
      if (field.checked) values[block][action] = field.value;
    } else {
      values[block][action] = field.value;
    }
  }
  return values;
}

async function submitModal() {
  for (const error of $("modal-form").querySelectorAll(".bk-error")) error.textContent = "";
  const result = await postJson("/sandbox/control/submit", { user: state.user, view_id: state.view, values: modalValues() });
  if (result.errors) {
    for (const [block, message] of Object.entries(result.errors)) {
      const slot = $("modal-form").querySelector(`.bk-input[data-block-id="${CSS.escape(block)}"] .bk-error`);
      if (slot) slot.textContent = message;
    }
  } else if (result.status < 200 || result.status > 299) {
    toast("countersign answered HTTP " + result.status);
  }
  state.view = null;
  refresh();
}

async function closeModal() {
  await postJson("/sandbox/control/close", { user: state.user, view_id: state.view });
  state.view = null;
  refresh();
}

async function sendCommand(event) {
  event.preventDefault();
  const input = $("command");
  const line = input.value.trim();
  if (!line) return;
  const [command, ...rest] = line.startsWith("/") ? line.split(/\s+/) : ["/countersign", line];
  input.value = "";
  const result = await postJson("/sandbox/control/command", { user: state.user, channel: state.channel, command, text: rest.join(" ") });
  if (result.error) toast(result.error);
  else if (result.status < 200 || result.status > 299) toast("countersign answered HTTP " + result.status);
  refresh();
}

async function start() {
  state.workspace = await getJson("/sandbox/control/workspace");
  const [hashChannel, hashQuery] = location.hash.slice(1).split("?");
  const asUser = new URLSearchParams(hashQuery || "").get("as");
  const people = state.workspace.users;
  state.user = people.some((u) => u.id === asUser) ? asUser : (localStorage.getItem("sandbox-user") || people[0].id);
  if (!people.some((u) => u.id === state.user)) state.user = people[0].id;
  const picker = $("acting-as");
  for (const user of people) {
    const option = document.createElement("option");
    option.value = user.id;
    option.textContent = `${user.real_name} (@${user.name})`;
    picker.append(option);
  }
  picker.value = state.user;
  picker.addEventListener("change", () => {
    state.user = picker.value;
    state.view = null;
    localStorage.setItem("sandbox-user", state.user);
    if (state.inbox) selectInbox(state.inbox);
    else select(state.channel);
  });
  const channels = state.workspace.channels;
  const first = channels.find((c) => !c.user);
  if (hashChannel && hashChannel.startsWith("inbox:")) selectInbox(hashChannel.slice("inbox:".length));
  else select(channels.some((c) => c.id === hashChannel) ? hashChannel : first && first.id);

  document.addEventListener("click", (event) => {
    const button = event.target.closest("button.bk-button[data-action-id]");
    if (button) { event.preventDefault(); click(button); return; }
    const thread = event.target.closest("button.thread-link");
    if (thread) { state.thread = thread.dataset.thread; refresh(); }
  });
  $("close-thread").addEventListener("click", () => { state.thread = null; refresh(); });
  $("modal-submit").addEventListener("click", submitModal);
  $("modal-close").addEventListener("click", closeModal);
  $("modal-form").addEventListener("submit", (event) => { event.preventDefault(); submitModal(); });
  $("composer").addEventListener("submit", sendCommand);

  const events = new EventSource("/sandbox/events");
  events.addEventListener("changed", () => refresh());
  // Fallback for proxies that buffer event streams.
  setInterval(refresh, 10000);
}

start();
