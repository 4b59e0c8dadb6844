"""Symbols shared by the catalog: dimensions and index helpers."""
import sympy as sp

B, N, M, C = sp.symbols("B N M C", integer=True, positive=True)  # batch, inputs, outputs, classes


def idx(name: str, n) -> sp.Idx:
    return sp.Idx(name, n)


def tensors(names: str, **kwargs):
    return [sp.IndexedBase(n, **kwargs) for n in names.split()]
