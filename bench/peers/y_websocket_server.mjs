// The reference y-websocket server: @y/websocket-server's setupWSConnection (in-memory
// documents, the same wiring as its bundled server.js) on 127.0.0.1:PORT, for bench/.
import http from 'node:http'
import { WebSocketServer } from 'ws'
import { setupWSConnection } from '@y/websocket-server/utils'

const port = Number.parseInt(process.argv[2] ?? '0', 10)
const wss = new WebSocketServer({ noServer: true })
wss.on('connection', setupWSConnection)
const server = http.createServer((_request, response) => {
  response.writeHead(200, { 'Content-Type': 'text/plain' })
  response.end('okay')
})
server.on('upgrade', (request, socket, head) => {
  wss.handleUpgrade(request, socket, head, (ws) => wss.emit('connection', ws, request))
})
server.listen(port, '127.0.0.1', () => {
  console.log(`y-websocket-server listening on 127.0.0.1:${server.address().port}`)
})
