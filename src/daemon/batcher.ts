/**
 * Group commit: work submitted while `concurrency` batches are running waits
 * and goes together in the next one, at most `maxItems` items and `maxBytes`
 * bytes (an item alone may be bigger). With a slot free an item goes at once,
 * alone: nothing waits for a batch to fill.
 *
 * `run` answers each item of a batch: its result, or the error it failed with
 * alone. When `run` throws, every item of the batch fails with that error.
 */
export interface BatcherOptions<I> {
  concurrency: number;
  maxItems: number;
  maxBytes: number;
  bytes(item: I): number;
  /** Called with each batch's size, before it runs. */
  onBatch?(size: number): void;
}

interface Waiting<I, R> {
  item: I;
  resolve(result: R): void;
  reject(err: unknown): void;
}

export class Batcher<I, R> {
  private readonly queue: Waiting<I, R>[] = [];
  private running = 0;

  constructor(
    private readonly run: (items: I[]) => Promise<(R | Error)[]>,
    private readonly options: BatcherOptions<I>,
  ) {}

  submit(item: I): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      this.pump();
    });
  }

  /** Items waiting for a batch. */
  get waiting(): number {
    return this.queue.length;
  }

  private pump(): void {
    while (this.running < this.options.concurrency && this.queue.length > 0) {
      const batch = this.take();
      this.running++;
      this.options.onBatch?.(batch.length);
      void this.runBatch(batch).finally(() => {
        this.running--;
        this.pump();
      });
    }
  }

  private take(): Waiting<I, R>[] {
    const { maxItems, maxBytes, bytes } = this.options;
    let size = 0;
    let n = 0;
    while (n < this.queue.length && n < maxItems) {
      const next = bytes((this.queue[n] as Waiting<I, R>).item);
      if (n > 0 && size + next > maxBytes) break;
      size += next;
      n++;
    }
    return this.queue.splice(0, n);
  }

  private async runBatch(batch: Waiting<I, R>[]): Promise<void> {
    let results: (R | Error)[];
    try {
      results = await this.run(batch.map((w) => w.item));
    } catch (err) {
      for (const w of batch) w.reject(err);
      return;
    }
    batch.forEach((w, i) => {
      const result = results[i];
      if (result instanceof Error) w.reject(result);
      else if (result === undefined) w.reject(new Error('a batch returned no result for an item'));
      else w.resolve(result);
    });
  }
}
