"""Entry points: one Hydra ``main`` per command, sharing :mod:`mnistapp.cli.task`.

``train`` (``python train.py``, ``mnistapp-train``), ``evaluate`` (``python eval.py``,
``mnistapp-eval``), ``predict`` and ``export`` (``mnistapp-predict``, ``mnistapp-export``) and
``summarize`` (``python -m mnistapp.cli.summarize <sweep_dir>``).
"""
