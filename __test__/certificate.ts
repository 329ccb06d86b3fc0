// A self-signed X.509 certificate for `localhost` and 127.0.0.1 (P-256, made by openssl), for a
// node whose HTTP side a browser or a WebSocket client reaches: they cannot use raw public keys.
import { execFileSync } from 'node:child_process'
import { createHash, X509Certificate } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'

/** A certificate and its key, as files for `serve({ tls })` and as what clients trust. */
export interface TestCertificate {
  /** PEM file of the certificate. */
  cert: string
  /** PEM file of its private key. */
  key: string
  /** The certificate as PEM text (what a Node client passes as `ca`). */
  pem: string
  /** base64 SHA-256 of its SubjectPublicKeyInfo (Chromium's `--ignore-certificate-errors-spki-list`). */
  spki: string
  /** Deletes the files. */
  remove(): void
}

/** Makes a fresh certificate in a temporary directory (needs `openssl`). */
export function selfSignedCertificate(): TestCertificate {
  const dir = mkdtempSync(path.join(tmpdir(), 'alknet-cert-'))
  const cert = path.join(dir, 'cert.pem')
  const key = path.join(dir, 'key.pem')
  try {
    execFileSync(
      'openssl',
      ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', '/CN=localhost',
        '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1', '-keyout', key, '-out', cert],
      { stdio: 'pipe' },
    )
  } catch (e) {
    rmSync(dir, { recursive: true, force: true })
    throw new Error(`openssl could not make a test certificate (apt-get install -y openssl): ${(e as Error).message}`)
  }
  const pem = readFileSync(cert, 'utf8')
  const der = new X509Certificate(pem).publicKey.export({ type: 'spki', format: 'der' })
  return { cert, key, pem, spki: createHash('sha256').update(der).digest('base64'), remove: () => rmSync(dir, { recursive: true, force: true }) }
}
