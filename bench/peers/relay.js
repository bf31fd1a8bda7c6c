// The least a collaboration server can do: a WebSocket relay with no
// logic. Every message a connection sends goes, as is, to every other
// connection on the same path (the room). No ordering beyond the socket's,
// no storage, no parsing. perf-reports/peers.md compares the others with it.
//
//   PORT=1236 node relay.js
'use strict'
const http = require('http')
const { WebSocketServer } = require('ws')

const port = Number(process.env.PORT || 1236)
const rooms = new Map()
const server = http.createServer((_, res) => res.end('relay'))
const wss = new WebSocketServer({ server, perMessageDeflate: false })

wss.on('connection', (ws, req) => {
  const name = req.url || '/'
  let room = rooms.get(name)
  if (!room) {
    room = new Set()
    rooms.set(name, room)
  }
  room.add(ws)
  ws.on('message', (data, isBinary) => {
    for (const peer of room) {
      if (peer !== ws && peer.readyState === peer.OPEN) peer.send(data, { binary: isBinary })
    }
  })
  ws.on('close', () => {
    room.delete(ws)
    if (room.size === 0) rooms.delete(name)
  })
  ws.on('error', () => ws.terminate())
})

server.listen(port, '127.0.0.1', () => console.log(`relay on 127.0.0.1:${port}`))
