"""Retrieval-augmented generation: index documents, retrieve with embeddings + BM25, cite sources.

loaders (files → text) → chunking (text → chunks) → embed (chunks → vectors) → index/bm25 (on
disk) → indexer (incremental builds, atomic publish via layout) → retrieve (hybrid search) →
prompt (numbered sources in the chat messages). ``cli`` is ``llmloop rag``.
"""
