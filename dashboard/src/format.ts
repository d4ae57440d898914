// Formatting of times and numbers for display.

/** "14:03:07" for today, else "2026-11-23 14:03:07" (local time); "" for no time (the API's
 * optional times may be absent or, as its document allows, null). */
export function time(iso: string | null | undefined): string {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const pad = (n: number) => String(n).padStart(2, '0');
  const hms = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  const now = new Date();
  if (d.toDateString() === now.toDateString()) return hms;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${hms}`;
}

/** "3 s ago", "5 min ago", "2 h ago". */
export function ago(iso: string | null | undefined): string {
  if (!iso) return '';
  const t = new Date(iso).getTime();
  if (Number.isNaN(t)) return '';
  const s = Math.max(0, Math.round((Date.now() - t) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

/** "in 5 min", "in 3 h" for a time to come; "3 s ago" (as ago()) for a time past. */
export function fromNow(iso: string | null | undefined): string {
  if (!iso) return '';
  const t = new Date(iso).getTime();
  if (Number.isNaN(t)) return '';
  const s = Math.round((t - Date.now()) / 1000);
  if (s <= 0) return ago(iso);
  if (s < 60) return `in ${s} s`;
  if (s < 3600) return `in ${Math.round(s / 60)} min`;
  if (s < 86400) return `in ${Math.round(s / 3600)} h`;
  return `in ${Math.round(s / 86400)} d`;
}

/** An ISO time from milliseconds since the Unix epoch; "" for none or a value that is not one. */
export function epoch(msSinceEpoch: unknown): string {
  if (typeof msSinceEpoch !== 'number' || !Number.isFinite(msSinceEpoch)) return '';
  const d = new Date(msSinceEpoch);
  return Number.isNaN(d.getTime()) ? '' : d.toISOString();
}

/** Milliseconds for people: "850 ms", "1.24 s". */
export function ms(v: number | undefined): string {
  if (v === undefined || !Number.isFinite(v)) return '';
  if (v < 1000) return `${Math.round(v)} ms`;
  return `${(v / 1000).toFixed(2)} s`;
}

/** Cuts a string to n characters with an ellipsis. */
export function cut(v: string, n: number): string {
  return v.length > n ? `${v.slice(0, n - 1)}…` : v;
}

/** Millicores for people: "500 m", "2 CPU", "1.5 CPU" (1000 m is one CPU). */
export function cpu(millicores: number | undefined): string {
  if (millicores === undefined || !Number.isFinite(millicores)) return '';
  if (millicores < 1000 || millicores % 100 !== 0) return `${millicores} m`;
  return `${millicores / 1000} CPU`;
}

/** MiB for people: "256 MiB", "7.75 GiB". */
export function mib(v: number | undefined): string {
  if (v === undefined || !Number.isFinite(v)) return '';
  if (v < 1024) return `${v} MiB`;
  return `${Number((v / 1024).toFixed(2))} GiB`;
}

/** A share (0-1) as a percentage: "12 %"; "" for no number. */
export function percent(share: number | undefined): string {
  if (share === undefined || !Number.isFinite(share)) return '';
  return `${Math.round(share * 100)} %`;
}
