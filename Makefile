# Shortcuts for the README commands.
.PHONY: demo test bench dist
demo:
	./scripts/demo.sh
test:
	./scripts/test.sh
bench:
	./scripts/bench.sh
dist:
	./scripts/dist.sh
