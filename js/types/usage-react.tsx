// The React hook, typed: compiled with `tsc --noEmit` with the JSX of React 19.
import { useFanout, type UseFanoutResult } from "fanout-client/react";

interface Progress {
  status: "pending" | "running" | "completed" | "failed";
  progress: number;
  message: string;
}

export function JobBar({ taskId }: { taskId: string }) {
  const { data, state, reset } = useFanout<Progress>("/events", {
    topics: [`progress:${taskId}`],
    event: "progress",
  });
  if (reset) return <p>Lost track ({reset.reason}): reload</p>;
  // data is Progress | null until the first event
  return (
    <div data-state={state}>
      <div style={{ width: `${data?.progress ?? 0}%` }} />
      {data?.message}
    </div>
  );
}

interface Note {
  title: string;
}

export function Notes({ token }: { token: string }) {
  const result: UseFanoutResult<Note[]> = useFanout<Note, Note[]>("/events", {
    topics: ["notifications"],
    event: ["notification", "pinned"],
    mode: "fetch",
    token,
    initial: [],
    reducer: (notes, note, meta) => (meta.type === "pinned" ? [note, ...notes] : [...notes, note]),
    onReset: () => result.client?.reconnect({ fresh: true }),
  });
  return (
    <ul>
      {result.data.map((note) => (
        <li key={note.title}>{note.title}</li>
      ))}
    </ul>
  );
}

export function Wrong() {
  // @ts-expect-error: the reducer must return the state type (Note[]), not a Note
  useFanout<Note, Note[]>("/events", { initial: [], reducer: (_notes, note) => note });
  // @ts-expect-error: enabled is a boolean
  useFanout("/events", { enabled: "yes" });
  const { data } = useFanout<Progress>("/events");
  // @ts-expect-error: data may be null before the first event
  return <p>{data.progress}</p>;
}
