/**
 * `useSocket`, a React hook over the official `socket.io-client`
 * (`@switchboard/client/react/socket.io`). A separate entry, so that only
 * the applications that use it need `socket.io-client` installed.
 *
 * @module
 */

import { useCallback, useEffect, useRef, useState } from "react";
import { io } from "socket.io-client";
import type { ManagerOptions, Socket, SocketOptions } from "socket.io-client";

/** One event received by the socket. */
export interface SocketMessage {
  /** The event's name. */
  event: string;
  /** Its arguments. */
  args: unknown[];
}

/** Options of {@link useSocket}: those of `io()`, plus `onEvent`. */
export type UseSocketOptions = Partial<ManagerOptions & SocketOptions> & {
  /** Called with every event received, in order (the state may batch several into one render). */
  onEvent?: (message: SocketMessage) => void;
};

/** What {@link useSocket} returns. */
export interface SocketState {
  /** The socket (`null` until the effect made it); use it for `emit`, `emitWithAck`, `on`... */
  socket: Socket | null;
  /** `connecting` (also while reconnecting), `connected`, or `disconnected` (by the server, which stops reconnections, or by `disconnect()`). */
  status: "connecting" | "connected" | "disconnected";
  /** The socket's id while connected. */
  id: string | null;
  /** The newest event received. */
  lastMessage: SocketMessage | null;
  /** The last `connect_error` (its `data` carries the server's code), cleared when connected. */
  error: Error | null;
  /** Emits an event (buffered by socket.io-client while disconnected). */
  emit: (event: string, ...args: unknown[]) => void;
}

/** The options as a key: a change of any value (not of identity) makes a new socket. Functions do not count. */
function keyOf(opts: object): string {
  return JSON.stringify(opts, (_k, v) => (typeof v === "function" ? undefined : v));
}

/**
 * A Socket.IO connection to `url` (its namespace included, e.g.
 * `http://host/` or `/chat`) while mounted: a socket of its own
 * (`forceNew`), disconnected at unmount. Made on the next task, so
 * StrictMode's extra mount connects nothing. `null` as `url` connects
 * nothing.
 */
export function useSocket(url: string | null, options: UseSocketOptions = {}): SocketState {
  const { onEvent, ...ioOptions } = options;
  const onEventRef = useRef(onEvent);
  onEventRef.current = onEvent;
  const optionsRef = useRef(ioOptions);
  optionsRef.current = ioOptions;
  const key = keyOf(ioOptions);
  const [state, setState] = useState<Omit<SocketState, "emit">>({ socket: null, status: "connecting", id: null, lastMessage: null, error: null });
  const socketRef = useRef<Socket | null>(null);

  useEffect(() => {
    if (url === null) return;
    let socket: Socket | null = null;
    const timer = setTimeout(() => {
      const s = io(url, { forceNew: true, ...optionsRef.current });
      socket = s;
      socketRef.current = s;
      setState({ socket: s, status: "connecting", id: null, lastMessage: null, error: null });
      s.on("connect", () => setState((st) => ({ ...st, status: "connected", id: s.id ?? null, error: null })));
      s.on("disconnect", () => setState((st) => ({ ...st, status: s.active ? "connecting" : "disconnected", id: null })));
      s.on("connect_error", (error) => setState((st) => ({ ...st, status: s.active ? "connecting" : "disconnected", error })));
      s.onAny((event: string, ...args: unknown[]) => {
        const message = { event, args };
        onEventRef.current?.(message);
        setState((st) => ({ ...st, lastMessage: message }));
      });
    }, 0);
    return () => {
      clearTimeout(timer);
      if (socket) {
        socket.offAny();
        socket.removeAllListeners();
        socket.disconnect();
      }
      if (socketRef.current === socket) socketRef.current = null;
    };
  }, [url, key]);

  const emit = useCallback((event: string, ...args: unknown[]) => {
    socketRef.current?.emit(event, ...args);
  }, []);
  return { ...state, emit };
}
