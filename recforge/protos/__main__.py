"""``python -m recforge.protos``: regenerate every ``*_pb2.py`` and stub from its ``.proto``."""

from recforge.protos import compile_protos

if __name__ == "__main__":
    compiled = compile_protos(force=True)
    print(f"compiled {len(compiled)} proto files")
