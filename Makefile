# Shortcuts for the README commands.
.PHONY: demo test bench dist golden
demo:
	./scripts/demo.sh
test:
	./scripts/test.sh
bench:
	./scripts/bench.sh
dist:
	./scripts/dist.sh
golden:
	./scripts/golden.sh
