"""Compiled programs (cache, store on disk), JAX set-up, atomic files: what every layer above runs on."""
