"""What an update may do: the shadow check before it touches the live document, the
field rules and lattices, repairs made as server writes, and the record of them."""
