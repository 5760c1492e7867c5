"""Jobs: the ensemble spec, the capability model, the lifecycles and the orchestration built on
them. See README.md. Import the submodules you need; this package imports nothing by itself."""
