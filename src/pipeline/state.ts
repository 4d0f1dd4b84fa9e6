// What the stages of the pipeline share: one engine's regions, ledger, journal and event emitter.
import type { RasEvents } from '../events';
import type { DurableLog } from './durable';
import type { Idle } from './idle';
import type { Journal } from '../ledger/file';
import type { Ledger } from '../ledger/ledger';
import type { JournalReplay } from '../ledger/records';
import type { Guard } from '../policy';
import type { Region } from '../region';

/** A huge page that was split before a restart and not handed over: its file data is stale. */
export interface StaleHugePage {
  region: string;
  hugePageIndex: number;
  hugePageGuestPhysAddr: bigint;
  size: number;
  /** The 4 KiB frames the journal has lost in it (lost either way). */
  lostGuestPhysAddrs: bigint[];
}

/** The engine's handover (pipeline/handover.ts) and what its replay found of an earlier one. */
export interface HandoverState {
  /** Set by prepareHandover() (and while it runs), cleared by abortHandover(): the engine is handed over. */
  id: string | undefined;
  /** Replay: huge pages re-split from a valid handover (file data current), and pages found stale. */
  handedOverHugePages: number;
  stale: StaleHugePage[];
}

export interface EngineState {
  /** Mapped regions by native id. */
  readonly regions: ReadonlyMap<number, Region>;
  readonly ledger: Ledger;
  readonly journal: Journal | undefined;
  /** The journal's state when the engine opened. */
  readonly replay: JournalReplay | undefined;
  readonly events: RasEvents;
  /** Writes lost frames to the journal; reports and retries what it cannot write. */
  readonly durable: DurableLog;
  /** whenIdle()'s waiters, and deliveries deferred past the current call (replayed losses). */
  readonly idle: Idle;
  /** The guard the engine asked the native side for (a page whose guard failed says its own). */
  readonly guard: Guard;
  readonly handover: HandoverState;
}
