import * as native from '../index.js'
import { fromNative } from './errors'

/**
 * A node's Ed25519 identity: one key, used in TLS (raw public key) and as the fingerprint
 * other nodes pin.
 *
 * @example
 * ```ts
 * const key = await Keypair.loadOrCreate('./node.key') // mode 0600
 * key.fingerprint // 'ed25519:…'
 * ```
 */
export class Keypair {
  /** @internal */
  readonly native: native.Keypair

  private constructor(key: native.Keypair) {
    this.native = key
  }

  /** A new key, kept in memory only. */
  static generate(): Keypair {
    return new Keypair(native.Keypair.generate())
  }

  /** Loads the PKCS#8 PEM key at `path`, or creates and saves one (file mode 0600). */
  static async loadOrCreate(path: string): Promise<Keypair> {
    try {
      return new Keypair(native.Keypair.loadOrCreate(path))
    } catch (e) {
      throw fromNative(e)
    }
  }

  /** `ed25519:<64 lowercase hex>`: what peers pin and peer lists name. */
  get fingerprint(): string {
    return this.native.fingerprint
  }
}
