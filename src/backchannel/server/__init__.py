"""backchannel on the network: REST API, client WebSocket, control URL, signed webhooks."""
