"""The bottom layer, shared by the client, the mock and the analysis: the tokenizer, the SSE decoder,
the wire formats' vocabulary, the precise clock and the record schema. Imports nothing of ours above it."""
