"""`scorer train`: options into a typed job, then the training."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from scorer.cli.app import TextCols, app


@app.command("train")
def train_command(
    data: Annotated[
        str,
        typer.Argument(help="Labelled reviews: CSV, Parquet or NDJSON (file, folder, glob, URL)."),
    ],
    out: Annotated[Path, typer.Option("--out", help="Model directory to create.")],
    text_col: TextCols = None,
    label_col: Annotated[str, typer.Option(help="Rating column (whole numbers).")] = "Rating",
    split_file: Annotated[
        Path | None, typer.Option(help="row,split file (train/val/test); else seeded 80/10/10.")
    ] = None,
    variant: Annotated[
        str | None, typer.Option(help="fixed | packed | vectors | regression.")
    ] = None,
    vectors: Annotated[
        Path | None, typer.Option(help="GloVe-format vectors (for --variant vectors).")
    ] = None,
    reference: Annotated[
        bool, typer.Option("--reference", help="Use the reference recipe's sizes and settings.")
    ] = False,
    config: Annotated[
        Path | None, typer.Option("--config", help="JSON file with any of these options.")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="KEY=VALUE (repeatable): a recipe setting over the preset and --config, e.g. "
            "hidden_dim=48 or train.epochs=3; VALUE is read as JSON, else as text.",
        ),
    ] = None,
    recipe: Annotated[
        str | None,
        typer.Option(
            help="A named recipe instead of the default: hidden128 (the default before the "
            "distilled one: the hidden-128 model alone)."
        ),
    ] = None,
    bidirectional: Annotated[bool | None, typer.Option("--bidirectional/--unidirectional")] = None,
    layers: Annotated[int | None, typer.Option()] = None,
    embedding_dim: Annotated[int | None, typer.Option()] = None,
    hidden_dim: Annotated[int | None, typer.Option()] = None,
    pooling: Annotated[str | None, typer.Option(help="last | last+max.")] = None,
    dropout: Annotated[float | None, typer.Option()] = None,
    max_len: Annotated[int | None, typer.Option()] = None,
    min_count: Annotated[int | None, typer.Option()] = None,
    keep_whitespace: Annotated[
        bool | None, typer.Option("--keep-whitespace/--drop-whitespace")
    ] = None,
    marks: Annotated[
        str | None,
        typer.Option(
            help="Punctuation to keep, each character a token of its own (e.g. '!?'); "
            "'' cleans all punctuation away, as the reference recipe does. Default: none or "
            "'!?', whichever a linear model prefers on validation (config key marks_choice)."
        ),
    ] = None,
    epochs: Annotated[int | None, typer.Option()] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(help="Rows per step (default 128; on CUDA 512, see --lr)."),
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(
            help="Peak learning rate (default 3e-3; on CUDA 6e-3). Give only one of "
            "--batch-size/--lr on CUDA and the other comes from the CUDA preset."
        ),
    ] = None,
    weight_decay: Annotated[float | None, typer.Option()] = None,
    patience: Annotated[int | None, typer.Option(help="Epochs without val improvement.")] = None,
    expected_loss_weight: Annotated[
        float | None, typer.Option(help="Weight of the expected-rating squared error.")
    ] = None,
    tail: Annotated[
        int | None,
        typer.Option(help="Of a review longer than --max-len, keep its last TAIL tokens too."),
    ] = None,
    wide_buckets: Annotated[
        int | None,
        typer.Option(help="Linear n-gram path: bigram hash buckets (0: the LSTM alone)."),
    ] = None,
    wide_lr_scale: Annotated[
        float | None, typer.Option(help="The n-gram path's learning rate, times --lr.")
    ] = None,
    label_smoothing: Annotated[float | None, typer.Option()] = None,
    token_dropout: Annotated[
        float | None,
        typer.Option(help="Training only: each token becomes <unk> with this probability."),
    ] = None,
    average_epochs: Annotated[
        int | None,
        typer.Option(help="Average the weights of this many epochs ending at the best one."),
    ] = None,
    blend: Annotated[
        bool | None,
        typer.Option(
            "--blend/--no-blend",
            help="After training, fit a linear model over idf-weighted n-grams on its own and "
            "blend it in, the weights chosen on validation (classification only; on by default).",
        ),
    ] = None,
    refit: Annotated[
        bool | None,
        typer.Option(
            "--refit/--no-refit",
            help="Once everything is chosen on validation, train the kept model again on the "
            "training and validation rows for the epochs early stopping chose (on by default).",
        ),
    ] = None,
    search_budget: Annotated[
        float | None,
        typer.Option(
            help="The search's size in millions of training token passes (the teacher's and "
            "the refit's count too): within it, also try the preset's variants and keep the "
            "lowest validation loss under the training objective. Planned from the data, not "
            "the clock (0: the default only)."
        ),
    ] = None,
    teacher_hidden_dim: Annotated[
        int | None,
        typer.Option(
            help="Distillation: train a model of this hidden size first and learn from its "
            "probabilities too (0: no teacher)."
        ),
    ] = None,
    teacher: Annotated[
        Path | None,
        typer.Option(
            help="Distillation: learn from this exported model directory's probabilities "
            "(same labels) instead of training a teacher."
        ),
    ] = None,
    distill_weight: Annotated[
        float | None,
        typer.Option(help="The teacher's soft targets' share of the cross-entropy."),
    ] = None,
    distill_temperature: Annotated[
        float | None, typer.Option(help="The teacher's soft targets' temperature.")
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda.")] = None,
    precision: Annotated[
        str | None,
        typer.Option(
            help="auto | fp32 | bf16 | fp16. auto: fp16 with a GradScaler on CUDA, fp32 on CPU; "
            "bf16 keeps the LSTM in fp32."
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    threads: Annotated[
        int | None,
        typer.Option(help="torch CPU threads; default: the CPUs this process may use."),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out.")] = False,
) -> None:
    """Train a rating model; epochs are chosen on validation, test is scored once."""
    import os

    # Before torch loads: its OpenMP (libgomp) reads this once. Spinning idle threads slow
    # training many times over when another job shares the CPUs; passive ones sleep.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from scorer.io.labelled import DEFAULT_TEXT_COLUMNS
    from scorer.train.job import TrainJob, train_model
    from scorer.train.presets import RecipeOptions, parse_sets, resolve

    options = RecipeOptions(
        variant=variant,
        bidirectional=bidirectional,
        layers=layers,
        embedding_dim=embedding_dim,
        hidden_dim=hidden_dim,
        pooling=pooling,
        dropout=dropout,
        max_len=max_len,
        min_count=min_count,
        keep_whitespace=keep_whitespace,
        marks=marks,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        patience=patience,
        expected_loss_weight=expected_loss_weight,
        tail=tail,
        wide_buckets=wide_buckets,
        wide_lr_scale=wide_lr_scale,
        label_smoothing=label_smoothing,
        token_dropout=token_dropout,
        average_epochs=average_epochs,
        blend=blend,
        refit=refit,
        search_budget=search_budget,
        teacher_hidden_dim=teacher_hidden_dim,
        distill_weight=distill_weight,
        distill_temperature=distill_temperature,
        device=device,
        precision=precision,
        seed=seed,
        threads=threads,
    )
    model_cfg, tokenizer, train_cfg = resolve(
        options,
        reference=reference,
        config_file=config,
        recipe=recipe,
        sets=parse_sets(set_ or []),
    )
    job = TrainJob(
        data=data,
        out=out,
        model=model_cfg,
        tokenizer=tokenizer,
        train=train_cfg,
        text_columns=tuple(text_col or DEFAULT_TEXT_COLUMNS),
        label_column=label_col,
        split_file=split_file,
        vectors=vectors,
        teacher=teacher,
        overwrite=overwrite,
    )
    typer.echo(train_model(job).line())
