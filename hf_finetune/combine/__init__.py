"""Combining finished runs: logit ensembles, model soups, and distillation into a student.

    members      finished runs as members: loading, label/backbone/architecture checks, split scores
    ensemble     `hf-finetune ensemble --method logits`: an ensemble folder that predict/evaluate read
    soup         `--method soup | greedy-soup`: weight averaging (Wortsman et al., 2022), a plain model folder
    card         the ensemble's and the soup's model card
    distill      the teacher (a run or an ensemble) and the distillation loss, for the trainer
"""
