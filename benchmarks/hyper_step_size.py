"""How far one Adam step moves a generated weight, against a plain weight's step (lr).

Under Adam every parameter moves by about lr per step whatever its gradient's scale. A weight
the hypernetwork generates is (embedding . W2) + b2 over m embedding entries, and with a
consistent gradient on the weight all of its W2 entries move the same way, so the generated
weight moves several times lr. This measures that factor: a random gradient held fixed on every
generated weight, a few Adam steps on the hypernetwork, mean |change of the weights| / (steps x lr).
It is why the search's generator lr (`search.lr`) wants to be a fraction of `train.lr`.

    python benchmarks/hyper_step_size.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import compress


def step_factor(arch: str, sizes: dict, embedding_dim: int, steps: int = 5, lr: float = 1e-4) -> float:
    torch.manual_seed(0)
    hyper = compress.HyperGenerator(arch, compress.full_plan(arch, **sizes), embedding_dim=embedding_dim)
    optimizer = torch.optim.Adam(hyper.hypernet.parameters(), lr=lr)
    before = [w.detach().clone() for w in hyper.generate_weights()]
    grads = [torch.randn_like(w) for w in before]
    for _ in range(steps):
        optimizer.zero_grad()
        sum((w * g).sum() for w, g in zip(hyper.generate_weights(), grads, strict=True)).backward()
        optimizer.step()
    moved = torch.cat([(w.detach() - b).abs().flatten() for w, b in zip(hyper.generate_weights(), before, strict=True)])
    return float(moved.mean()) / (steps * lr)


def main() -> int:
    rows = [
        {"arch": arch, "sizes": sizes, "embedding_dim": m, "factor": step_factor(arch, sizes, m)}
        for arch, sizes in (("resnet", {"ngf": 16, "n_blocks": 3}), ("unet", {"ngf": 8, "num_downs": 5}))
        for m in (4, 8, 16)
    ]
    print(f"{'generator':<36}{'m':>4}{'weight step / lr':>18}   (a plain weight under Adam: 1.0)")
    for r in rows:
        name = f"{r['arch']} {json.dumps(r['sizes'])}"
        print(f"{name:<36}{r['embedding_dim']:>4}{r['factor']:>18.1f}")
    out = Path(__file__).parent / "results" / "hyper_step_size.json"
    out.write_text(json.dumps({"steps": 5, "lr": 1e-4, "results": rows}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
