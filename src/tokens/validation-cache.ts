import type { TokenValidation } from "./token-validator";

interface CacheEntry {
  validation: TokenValidation;
  /** Epoch milliseconds after which the entry is ignored. */
  expiresAtMs: number;
}

/**
 * In-process cache of validation results by token hash, bounded in size
 * and age. Entries of a token are dropped when this process changes it.
 * A generation number keeps a lookup that overlapped such a change from
 * storing what it read before the change.
 */
export class ValidationCache {
  private readonly entries = new Map<string, CacheEntry>();
  private readonly hashesByToken = new Map<string, Set<string>>();
  private generation = 0;

  constructor(
    private readonly ttlMs: number,
    private readonly maxEntries: number,
  ) {}

  get enabled(): boolean {
    return this.ttlMs > 0 && this.maxEntries > 0;
  }

  /** Returns the cached result of a hash, unless it is missing or stale. */
  get(tokenHash: string): TokenValidation | undefined {
    const entry = this.entries.get(tokenHash);
    if (!entry) {
      return undefined;
    }
    if (entry.expiresAtMs <= Date.now()) {
      this.remove(tokenHash);
      return undefined;
    }
    return entry.validation;
  }

  /** Returns the generation to pass to `set` after the lookup. */
  startLookup(): number {
    return this.generation;
  }

  /**
   * Caches a result read since `startLookup` returned `generation`. The
   * entry lives for the TTL, and no longer than the moment the result
   * would change by itself: the token's expiry or the end of a grace
   * period, by this process's clock.
   */
  set(tokenHash: string, validation: TokenValidation, generation: number) {
    if (!this.enabled || generation !== this.generation) {
      return;
    }

    const now = Date.now();
    let expiresAtMs = now + this.ttlMs;
    if (validation.result === "valid") {
      const ends = validation.graceEndsAt ?? validation.token?.expiresAt;
      if (ends) {
        expiresAtMs = Math.min(expiresAtMs, ends.getTime());
      }
    }
    if (expiresAtMs <= now) {
      return;
    }

    this.remove(tokenHash);
    while (this.entries.size >= this.maxEntries) {
      const oldest = this.entries.keys().next().value as string;
      this.remove(oldest);
    }
    this.entries.set(tokenHash, { validation, expiresAtMs });

    const tokenId = validation.token?.id;
    if (tokenId !== undefined) {
      const hashes = this.hashesByToken.get(tokenId) ?? new Set<string>();
      hashes.add(tokenHash);
      this.hashesByToken.set(tokenId, hashes);
    }
  }

  /** Drops every entry of a token that this process changed. */
  invalidate(tokenId: string): void {
    this.generation++;
    for (const tokenHash of this.hashesByToken.get(tokenId) ?? []) {
      this.entries.delete(tokenHash);
    }
    this.hashesByToken.delete(tokenId);
  }

  private remove(tokenHash: string): void {
    const entry = this.entries.get(tokenHash);
    this.entries.delete(tokenHash);

    const tokenId = entry?.validation.token?.id;
    const hashes =
      tokenId === undefined ? undefined : this.hashesByToken.get(tokenId);
    if (tokenId !== undefined && hashes) {
      hashes.delete(tokenHash);
      if (hashes.size === 0) {
        this.hashesByToken.delete(tokenId);
      }
    }
  }
}
