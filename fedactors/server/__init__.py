"""The server: the synchronous and FedBuff drivers, the shared release step, screening,
server optimizers and secure collection."""
