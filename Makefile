# Shortcuts for the two README commands.
.PHONY: demo test bench
demo:
	./scripts/demo.sh
test:
	./scripts/test.sh
bench:
	./scripts/bench.sh
