// The MCP SDK's declarations name the DOM type `HeadersInit`, which Node's types (lib ES2022, no
// DOM) only have inside undici-types; this makes it visible to the strict build (skipLibCheck off).
type HeadersInit = import('undici-types').HeadersInit
