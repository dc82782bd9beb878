// Type checks of the published declarations (dist/*.d.ts, through the
// package's exports): `npm run typecheck` compiles this file; the
// `@ts-expect-error` lines fail the check if a wrong use stops being an
// error.

import { SwitchboardClient, SwitchboardError, CloseCode } from "@switchboard/client";
import type { ConnectionState, Publication, PresenceEntry, Published, Position } from "@switchboard/client";
import { SwitchboardProvider, useChannel, useEventSource, usePresence, usePublish, useSwitchboard } from "@switchboard/client/react";
import { useSocket } from "@switchboard/client/react/socket.io";

const client = new SwitchboardClient("/ws", { getToken: async ({ refresh }) => (refresh ? "new" : "old"), backoffMax: 5000 });
client.on("message:chat:lobby", (m: Publication) => m.offset + 1);
client.on("join:chat:lobby", (j) => j.user.toUpperCase());
client.on("state", (s: ConnectionState) => s);
client.on("error", (e: SwitchboardError) => e.code);
// @ts-expect-error a state is not a publication
client.on("state", (s: Publication) => s);
// @ts-expect-error no such option
new SwitchboardClient("/ws", { tokn: "x" });
const closeCode: number = CloseCode.DISCONNECTED;

async function requests(): Promise<void> {
  const published: Published = await client.publish("chat:lobby", { text: "hi" }, { queue: false });
  const people: PresenceEntry[] = await client.presence("chat:lobby");
  const history = await client.history<{ text: string }>("chat:lobby", { limit: 10 });
  const first: string | undefined = history.publications[0]?.data.text;
  const saved: Position | undefined = client.position("chat:lobby");
  await client.subscribe("chat:lobby", { since: saved });
  // @ts-expect-error since is a position
  await client.subscribe("chat:lobby", { since: 3 });
  void [published, people, first, closeCode];
}

function Chat() {
  const { state, user, client: c } = useSwitchboard();
  const { publications, status, reset, position } = useChannel<{ text: string }>("chat:lobby", { since: { offset: 1, epoch: "e" } });
  const { presence } = usePresence("chat:lobby");
  const { publish, pending } = usePublish("chat:lobby");
  const es = useEventSource("/events?channel=chat:lobby", { events: ["message", "join"] });
  const io = useSocket("/", { auth: { token: "t" }, transports: ["websocket"] });
  // @ts-expect-error the status is a string union
  const wrong: number = status;
  void [c, reset, position, wrong];
  return (
    <div data-state={state} data-user={user?.user} onClick={() => publish({ text: "x" })}>
      {publications.map((p) => p.data.text.toUpperCase())}
      {presence.map((p) => p.name)}
      {pending}
      {es.lastMessage?.data}
      {io.status === "connected" ? io.id : io.error?.message}
    </div>
  );
}

export const app = (
  <SwitchboardProvider url="/ws" options={{ token: "t" }}>
    <Chat />
  </SwitchboardProvider>
);
void requests;
