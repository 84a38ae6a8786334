"""Reference implementations the tests hold the production code to (slow, plain, one step at a time)."""
