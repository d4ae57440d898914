// One loader per resource: load() fetches and renders it. Requests are coalesced: the first
// schedule() starts a short timer, later ones within it are folded in, and a request made while a
// load runs makes it run once more afterwards, so a burst of events costs one or two reads.

export type Report = (name: string, error: unknown) => void;

export class Loader {
  private timer: number | undefined;
  private running = false;
  private again = false;

  constructor(
    readonly name: string,
    private readonly load: () => Promise<void>,
    private readonly report: Report,
    private readonly enabled: () => boolean,
  ) {}

  schedule(delayMs = 250): void {
    if (this.timer !== undefined) return;
    this.timer = window.setTimeout(() => {
      this.timer = undefined;
      void this.run();
    }, delayMs);
  }

  async run(): Promise<void> {
    if (!this.enabled()) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = true;
    try {
      await this.load();
      this.report(this.name, null);
    } catch (e) {
      this.report(this.name, e);
    } finally {
      this.running = false;
      if (this.again) {
        this.again = false;
        this.schedule(0);
      }
    }
  }
}
