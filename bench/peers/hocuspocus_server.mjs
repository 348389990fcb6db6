// Hocuspocus with no extensions (in-memory documents) on 127.0.0.1:PORT, for bench/.
import { Server } from '@hocuspocus/server'

const port = Number.parseInt(process.argv[2] ?? '0', 10)
const server = new Server({ port, address: '127.0.0.1', quiet: true })
await server.listen()
console.log(`hocuspocus listening on 127.0.0.1:${server.address.port}`)
