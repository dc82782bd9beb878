// The page of the browser test: every hook of the package, rendered under
// StrictMode (React's development build, which mounts effects twice), from
// the same origin as the server (it serves this folder with web.dir).
// Query: ?token=<jwt>&channel=<chat channel>[&only=ws] (only the /ws hooks:
// a page that leaves the channel as soon as it closes, where an SSE stream
// would stay present until the server's next write to it).

import { StrictMode, useEffect, useState } from "react";
import { createRoot } from "react-dom/client";
import { SwitchboardProvider, useChannel, useEventSource, usePresence, usePublish, useSwitchboard } from "@switchboard/client/react";
import { useSocket } from "@switchboard/client/react/socket.io";

const params = new URLSearchParams(location.search);
const token = params.get("token");
const channel = params.get("channel");
const onlyWs = params.get("only") === "ws";

function Status() {
  const { state, user } = useSwitchboard();
  return (
    <p data-testid="status" data-state={state}>
      {state} {user?.user}
    </p>
  );
}

function Channel() {
  const { status, publications, reset } = useChannel(channel);
  return (
    <ol data-testid="publications" data-status={status} data-reset={reset ? "yes" : "no"}>
      {publications.map((p) => (
        <li key={`${p.epoch}-${p.offset}`} data-testid="publication" data-offset={p.offset} data-replayed={String(p.replayed)}>
          {p.data.text}
        </li>
      ))}
    </ol>
  );
}

function Presence() {
  const { presence } = usePresence(channel);
  return (
    <ul data-testid="presence">
      {presence.map((p) => (
        <li key={p.user} data-testid="present" data-user={p.user}>
          {p.name}
        </li>
      ))}
    </ul>
  );
}

function Composer() {
  const { publish, pending, last, error } = usePublish(channel);
  const [text, setText] = useState("");
  const send = (e) => {
    e.preventDefault();
    publish({ text }).catch(() => {});
    setText("");
  };
  return (
    <form onSubmit={send} data-testid="composer" data-pending={pending} data-last={last?.offset ?? ""} data-error={error?.code ?? ""}>
      <label>
        Message <input value={text} onChange={(e) => setText(e.target.value)} />
      </label>
      <button type="submit">Send</button>
    </form>
  );
}

function Stream() {
  const [events, setEvents] = useState([]);
  const { status, lastEventId } = useEventSource(`/events?channel=${encodeURIComponent(channel)}&token=${encodeURIComponent(token)}`, {
    onMessage: (m) => setEvents((all) => [...all, JSON.parse(m.data)]),
  });
  return (
    <ol data-testid="stream" data-status={status} data-last-event-id={lastEventId}>
      {events.map((p, i) => (
        <li key={i} data-testid="streamed" data-offset={p.offset}>
          {p.data.text}
        </li>
      ))}
    </ol>
  );
}

function Sock() {
  const { socket, status, lastMessage, error } = useSocket("/", { auth: { token }, reconnectionDelayMax: 1000 });
  // A restarted server forgets the socket's subscriptions: subscribe on every connect.
  useEffect(() => {
    if (!socket) return;
    const subscribe = () => socket.emit("subscribe", { channel });
    socket.on("connect", subscribe);
    if (socket.connected) subscribe();
    return () => socket.off("connect", subscribe);
  }, [socket]);
  const last = lastMessage?.event === "publication" ? lastMessage.args[0].data.text : "";
  return (
    <p data-testid="socket" data-status={status} data-error={error?.message ?? ""}>
      {last}
    </p>
  );
}

function App() {
  return (
    <>
      <SwitchboardProvider url="/ws" options={{ token, backoffBase: 100, backoffMax: 500 }}>
        <Status />
        <Channel />
        <Presence />
        <Composer />
      </SwitchboardProvider>
      {onlyWs ? null : <Stream />}
      {onlyWs ? null : <Sock />}
    </>
  );
}

createRoot(document.getElementById("root")).render(
  <StrictMode>
    <App />
  </StrictMode>,
);
