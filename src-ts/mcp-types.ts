// The MCP SDK objects the bridges take and return, described by the members they use. Structural
// rather than the SDK's own classes, so that (1) a client or transport from either of the SDK's
// builds (ESM or CommonJS) fits, and (2) the published types do not pull in the SDK's declarations,
// which need DOM types (`HeadersInit`) and make every consumer's type check much slower.

/** Per-request options of an MCP SDK request. */
export interface McpRequestOptions {
  /** Aborting it cancels the request (`notifications/cancelled`). */
  signal?: AbortSignal
  /** The request's timeout in milliseconds. */
  timeout?: number
}

/** A connected MCP SDK `Client` (`@modelcontextprotocol/sdk/client`), as fromMCP uses it. */
export interface McpClient {
  /** The capabilities the server announced. */
  getServerCapabilities(): object | undefined
  /** One page of tools. */
  listTools(params?: { cursor?: string }, options?: McpRequestOptions): Promise<{ tools: object[]; nextCursor?: string }>
  /** Calls a tool. */
  callTool(params: { name: string; arguments?: Record<string, unknown> }, resultSchema?: undefined, options?: McpRequestOptions): Promise<object>
  /** One page of resources. */
  listResources(params?: { cursor?: string }, options?: McpRequestOptions): Promise<object>
  /** One page of resource templates. */
  listResourceTemplates(params?: { cursor?: string }, options?: McpRequestOptions): Promise<object>
  /** Reads a resource. */
  readResource(params: { uri: string }, options?: McpRequestOptions): Promise<object>
  /** Closes the connection (and stops a server process it started). */
  close(): Promise<void>
}

/** An MCP SDK transport (`StdioServerTransport`, `StreamableHTTPServerTransport`, `InMemoryTransport`, …). */
export interface McpTransport {
  /** Starts it (the server calls this on connect). */
  start(): Promise<void>
  /** Sends one JSON-RPC message. */
  send(message: object): Promise<void>
  /** Closes it. */
  close(): Promise<void>
}

/** The MCP SDK `Server` toMCP makes (`@modelcontextprotocol/sdk/server`), as far as it is used to serve. */
export interface McpServer {
  /** Serves over `transport` until it closes. */
  connect(transport: McpTransport): Promise<void>
  /** Closes the transport it serves. */
  close(): Promise<void>
  /** Called when the transport closed. */
  onclose?: () => void
  /** Called on a transport or protocol error. */
  onerror?: (error: Error) => void
}
