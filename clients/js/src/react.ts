/**
 * React hooks for Switchboard (`@switchboard/client/react`).
 *
 * - {@link SwitchboardProvider} owns one {@link SwitchboardClient} (or shares
 *   one given to it); {@link useSwitchboard} reads it and its connection
 *   state.
 * - {@link useChannel}, {@link usePresence} and {@link usePublish} use the
 *   provider's client: subscriptions are counted per channel, so several
 *   components may use one channel and the last one to unmount unsubscribes.
 * - {@link useEventSource} is a Server-Sent Events stream of its own (no
 *   provider needed); the Socket.IO hook is in `@switchboard/client/react/socket.io`.
 *
 * Connections survive React StrictMode's extra mount: an effect's cleanup
 * releases a connection or a subscription on the next task, and the
 * remount that StrictMode runs at once takes it back, so only one
 * connection (and one subscription per channel) is ever made.
 *
 * @module
 */

import { createContext, createElement, useCallback, useContext, useEffect, useRef, useState, useSyncExternalStore } from "react";
import type { ReactNode } from "react";
import { SwitchboardClient } from "./index.js";
import type {
  ClientOptions,
  ConnectionState,
  Position,
  PresenceEntry,
  Publication,
  Published,
  RequestOptions,
  Reset,
  SwitchboardError,
} from "./index.js";

const Context = createContext<SwitchboardClient | null>(null);

/**
 * Runs `release` on the next task unless `keep` is called first: StrictMode
 * unmounts and remounts at once, and the remount keeps what the first mount
 * opened.
 */
class Held {
  private count = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;

  /** Takes a hold (cancelling a release on its way). */
  take() {
    clearTimeout(this.timer);
    this.count += 1;
  }

  /** Gives a hold back; after the last one, `release` runs on the next task unless a hold is taken meanwhile. */
  give(release: () => void) {
    this.count -= 1;
    if (this.count === 0) this.timer = setTimeout(release, 0);
  }
}

const connections = new WeakMap<SwitchboardClient, Held>();
const subscriptions = new WeakMap<SwitchboardClient, Map<string, Held>>();

/** Keeps `client` connected while held (the provider's own client). */
function holdConnection(client: SwitchboardClient): () => void {
  let held = connections.get(client);
  if (!held) connections.set(client, (held = new Held()));
  held.take();
  client.connect();
  return () => held.give(() => client.close());
}

/**
 * Keeps `channel` subscribed while held; resolves when subscribed. The
 * first hold subscribes (with `since`), the last release unsubscribes.
 */
function holdChannel(client: SwitchboardClient, channel: string, since?: Position, recover?: boolean) {
  let map = subscriptions.get(client);
  if (!map) subscriptions.set(client, (map = new Map()));
  let held = map.get(channel);
  if (!held) map.set(channel, (held = new Held()));
  held.take();
  const ready = client.subscribe(channel, { since, recover });
  const hold = held;
  const release = () =>
    hold.give(() => {
      if (map.get(channel) === hold) map.delete(channel);
      client.unsubscribe(channel).catch(() => {});
    });
  return { ready, release };
}

/** Props of {@link SwitchboardProvider}. */
export interface SwitchboardProviderProps {
  /** The server's `/ws` URL (default `"/ws"`); read once, like `options`. */
  url?: string;
  /** Options of the client the provider makes (token or getToken...). */
  options?: ClientOptions;
  /** A client of the application's instead: the provider shares it and neither connects nor closes it. */
  client?: SwitchboardClient;
  /** The components that use the hooks. */
  children?: ReactNode;
}

/**
 * Gives its children a {@link SwitchboardClient}: its own (made at the first
 * render, connected while mounted, closed at unmount) or the one passed as
 * `client`. To change the URL or the options, give it a new `key`.
 */
export function SwitchboardProvider({ url = "/ws", options, client, children }: SwitchboardProviderProps) {
  const [own] = useState(() => (client ? null : new SwitchboardClient(url, options)));
  const value = client ?? own!;
  useEffect(() => (own ? holdConnection(own) : undefined), [own]);
  return createElement(Context.Provider, { value }, children);
}

/** What {@link useSwitchboard} returns. */
export interface SwitchboardState {
  /** The provider's client (for requests the hooks do not cover: `history`, `request`...). */
  client: SwitchboardClient;
  /** The connection state (re-rendered on every change). */
  state: ConnectionState;
  /** `{user, name}` once authenticated. */
  user: { user: string; name: string } | null;
  /** The last error not tied to a request (refused token, refused resubscription, `disconnected_by_server`). */
  error: SwitchboardError | null;
}

function useClient(): SwitchboardClient {
  const client = useContext(Context);
  if (!client) throw new Error("Switchboard hooks must be used inside <SwitchboardProvider>");
  return client;
}

/** The provider's client, its connection state and its last error. */
export function useSwitchboard(): SwitchboardState {
  const client = useClient();
  const state = useSyncExternalStore(
    useCallback((notify: () => void) => client.on("state", notify), [client]),
    () => client.state,
    () => client.state,
  );
  const [error, setError] = useState<SwitchboardError | null>(null);
  useEffect(() => client.on("error", setError), [client]);
  return { client, state, user: client.user, error };
}

/** Options of {@link useChannel}. */
export interface UseChannelOptions {
  /** Start after this position (saved earlier): what follows it is replayed. Used by the first subscriber of the channel only. */
  since?: Position;
  /** Resume after reconnections (default `true`). */
  recover?: boolean;
  /** How many publications `publications` keeps, newest last (default 100). */
  limit?: number;
  /** Called with every publication, in order (the state may batch several into one render). */
  onPublication?: (publication: Publication) => void;
}

/** What {@link useChannel} returns. */
export interface ChannelState<T = unknown> {
  /** `subscribing` until the server acknowledged (again after each reconnection), then `subscribed`; `error` when refused. */
  status: "subscribing" | "subscribed" | "error";
  /** The publications received while mounted (replayed ones included), oldest first, at most `limit`. */
  publications: Publication<T>[];
  /** The newest publication. */
  last: Publication<T> | null;
  /** The last position seen, to save and pass as `since` later. */
  position: Position | null;
  /** Set when the history no longer reached back to the last position seen: publications were missed, reload (e.g. with `client.history`). */
  reset: Reset | null;
  /** Why the subscription was refused. */
  error: SwitchboardError | null;
}

/**
 * Subscribes to `channel` while mounted and collects its publications.
 * Across reconnections the client resumes from the last position seen, so
 * the list has no gap and no duplicate while the history reaches back
 * (otherwise `reset` is set).
 */
export function useChannel<T = unknown>(channel: string, options: UseChannelOptions = {}): ChannelState<T> {
  const client = useClient();
  const { since, recover, limit = 100 } = options;
  const onPublication = useRef(options.onPublication);
  onPublication.current = options.onPublication;
  const [state, setState] = useState<ChannelState<T>>(() => ({
    status: "subscribing",
    publications: [],
    last: null,
    position: null,
    reset: null,
    error: null,
  }));
  const sinceRef = useRef(since);
  const limitRef = useRef(limit);
  limitRef.current = limit;

  useEffect(() => {
    const off = [
      client.on(`message:${channel}`, (p) => {
        onPublication.current?.(p);
        setState((s) => {
          const publications = [...s.publications, p as Publication<T>];
          if (publications.length > limitRef.current) publications.splice(0, publications.length - limitRef.current);
          return { ...s, publications, last: p as Publication<T>, position: { offset: p.offset, epoch: p.epoch } };
        });
      }),
      client.on("reset", (r) => {
        if (r.channel === channel) setState((s) => ({ ...s, reset: r, position: { offset: r.offset, epoch: r.epoch } }));
      }),
      client.on("subscribed", (sub) => {
        if (sub.channel !== channel) return;
        const position = sub.epoch === null ? null : { offset: sub.offset, epoch: sub.epoch };
        setState((s) => ({ ...s, status: "subscribed", error: null, position: position ?? s.position }));
      }),
      client.on("close", () => setState((s) => (s.status === "subscribed" ? { ...s, status: "subscribing" } : s))),
    ];
    const { ready, release } = holdChannel(client, channel, sinceRef.current, recover);
    let live = true;
    ready.then(
      (sub) => {
        if (!live) return;
        const position = sub.epoch === null ? null : { offset: sub.offset, epoch: sub.epoch };
        setState((s) => ({ ...s, status: "subscribed", error: null, position: s.position ?? position }));
      },
      (error: SwitchboardError) => {
        if (live && error.code !== "unsubscribed") setState((s) => ({ ...s, status: "error", error }));
      },
    );
    return () => {
      live = false;
      for (const f of off) f();
      release();
    };
  }, [client, channel, recover]);

  return state;
}

/** What {@link usePresence} returns. */
export interface PresenceState {
  /** The users present, one entry per user. */
  presence: PresenceEntry[];
  /** `true` until the first answer. */
  loading: boolean;
  /** Why the channel or its presence was refused. */
  error: SwitchboardError | null;
}

/**
 * Who is in `channel` (a namespace with presence): asked when subscribed
 * (and again after each reconnection), kept current with join and leave
 * signals. Subscribes to the channel while mounted, so the user is present
 * too.
 */
export function usePresence(channel: string): PresenceState {
  const client = useClient();
  const [state, setState] = useState<PresenceState>({ presence: [], loading: true, error: null });

  useEffect(() => {
    let live = true;
    let asked = 0;
    const refresh = () => {
      const n = ++asked;
      client.presence(channel).then(
        (presence) => {
          if (live && n === asked) setState({ presence, loading: false, error: null });
        },
        (error: SwitchboardError) => {
          if (live && n === asked && error.code !== "disconnected") setState((s) => ({ ...s, loading: false, error }));
        },
      );
    };
    const off = [
      client.on(`join:${channel}`, (j) => {
        setState((s) =>
          s.presence.some((p) => p.user === j.user) ? s : { ...s, presence: [...s.presence, { user: j.user, name: j.name, connections: 1 }] },
        );
        refresh(); // for the connection counts
      }),
      client.on(`leave:${channel}`, (l) => {
        setState((s) => ({ ...s, presence: s.presence.filter((p) => p.user !== l.user) }));
        refresh();
      }),
      client.on("subscribed", (sub) => {
        if (sub.channel === channel) refresh();
      }),
    ];
    const { ready, release } = holdChannel(client, channel);
    ready.then(refresh, (error: SwitchboardError) => {
      if (live && error.code !== "unsubscribed") setState((s) => ({ ...s, loading: false, error }));
    });
    return () => {
      live = false;
      for (const f of off) f();
      release();
    };
  }, [client, channel]);

  return state;
}

/** What {@link usePublish} returns. */
export interface PublishState {
  /** Publishes `data` to the hook's channel (queued while disconnected unless `queue: false`); resolves with where it was stored. */
  publish: (data: unknown, options?: RequestOptions) => Promise<Published>;
  /** Publications sent and not answered yet. */
  pending: number;
  /** The last publication stored. */
  last: Published | null;
  /** The last refusal or failure (cleared by the next success). */
  error: SwitchboardError | null;
}

/** Publishes to `channel` through the provider's client; `publish` keeps its identity while `channel` does. */
export function usePublish(channel: string): PublishState {
  const client = useClient();
  const [state, setState] = useState<Omit<PublishState, "publish">>({ pending: 0, last: null, error: null });
  const mounted = useRef(true);
  useEffect(() => {
    mounted.current = true;
    return () => {
      mounted.current = false;
    };
  }, []);
  const publish = useCallback(
    async (data: unknown, options?: RequestOptions) => {
      setState((s) => ({ ...s, pending: s.pending + 1 }));
      try {
        const last = await client.publish(channel, data, options);
        if (mounted.current) setState((s) => ({ pending: s.pending - 1, last, error: null }));
        return last;
      } catch (err) {
        if (mounted.current) setState((s) => ({ ...s, pending: s.pending - 1, error: err as SwitchboardError }));
        throw err;
      }
    },
    [client, channel],
  );
  return { publish, ...state };
}

/** One event of a Server-Sent Events stream. */
export interface StreamMessage {
  /** The event's type (`message`, or the name of an `event:` line). */
  event: string;
  /** Its data, as sent. */
  data: string;
  /** Its id (the stream's position), or the last one before it. */
  lastEventId: string;
}

/** Options of {@link useEventSource}. */
export interface UseEventSourceOptions {
  /** The event types to listen to (default `["message"]`; Switchboard also sends `join`, `leave`, `unrecovered`, `disconnect`). */
  events?: string[];
  /** Send cookies to another origin. */
  withCredentials?: boolean;
  /** Called with every event, in order (the state may batch several into one render). */
  onMessage?: (message: StreamMessage) => void;
  /** After the browser gave up (an HTTP refusal closes an EventSource), open a new stream after this many ms (default 5000; 0: never). A new stream starts from live events. */
  reopenAfter?: number;
  /** The EventSource constructor (default `globalThis.EventSource`; outside browsers, e.g. the `eventsource` package). */
  EventSource?: typeof EventSource;
}

/** What {@link useEventSource} returns. */
export interface EventSourceState {
  /** `connecting` (also while the browser reconnects), `open`, or `closed` (the browser gave up, or `close()` was called). */
  status: "connecting" | "open" | "closed";
  /** The newest event. */
  lastMessage: StreamMessage | null;
  /** The id of the newest event with an id: the browser sends it as `Last-Event-ID` when it reconnects, and the server resumes after it. */
  lastEventId: string;
  /** Set on a failure (the stream dropped or was refused); cleared when it opens again. */
  error: Event | null;
  /** Closes the stream (until `url` changes or the component mounts again). */
  close: () => void;
}

/**
 * A Server-Sent Events stream (`EventSource`) open while mounted. After a
 * network failure the browser reconnects by itself with `Last-Event-ID`, so
 * Switchboard's `/events` replays what was missed. Opening waits for the
 * next task, so StrictMode's extra mount opens nothing.
 */
export function useEventSource(url: string | null, options: UseEventSourceOptions = {}): EventSourceState {
  const { withCredentials = false, reopenAfter = 5000 } = options;
  const events = (options.events ?? ["message"]).join("\n");
  const onMessage = useRef(options.onMessage);
  onMessage.current = options.onMessage;
  const Ctor = options.EventSource ?? globalThis.EventSource;
  const [state, setState] = useState<Omit<EventSourceState, "close">>({ status: "connecting", lastMessage: null, lastEventId: "", error: null });
  const closeRef = useRef<() => void>(() => {});

  useEffect(() => {
    if (url === null) return;
    let source: EventSource | null = null;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let stopped = false;
    const open = () => {
      setState((s) => ({ ...s, status: "connecting" }));
      const es = new Ctor(url, { withCredentials });
      source = es;
      es.onopen = () => setState((s) => ({ ...s, status: "open", error: null }));
      es.onerror = (error) => {
        const closed = es.readyState === 2;
        setState((s) => ({ ...s, status: closed ? "closed" : "connecting", error }));
        if (closed && !stopped && reopenAfter > 0) timer = setTimeout(open, reopenAfter);
      };
      for (const event of events.split("\n")) {
        es.addEventListener(event, (e) => {
          const m = e as MessageEvent;
          const message = { event, data: String(m.data), lastEventId: m.lastEventId };
          onMessage.current?.(message);
          setState((s) => ({ ...s, lastMessage: message, lastEventId: m.lastEventId || s.lastEventId }));
        });
      }
    };
    timer = setTimeout(open, 0);
    const close = () => {
      stopped = true;
      clearTimeout(timer);
      source?.close();
      setState((s) => ({ ...s, status: "closed" }));
    };
    closeRef.current = close;
    return () => {
      stopped = true;
      clearTimeout(timer);
      source?.close();
    };
  }, [url, withCredentials, events, reopenAfter, Ctor]);

  const close = useCallback(() => closeRef.current(), []);
  return { ...state, close };
}
