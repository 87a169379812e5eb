def test_a_frozen_head_keeps_the_classifier_out_of_training(tiny_model_dir):
    from hpc_forget.data.labels import LABELS
    from hpc_forget.models.hub import load_model
    from hpc_forget.models.lora import add_lora

    trained = add_lora(load_model(str(tiny_model_dir), list(LABELS)), 4)
    frozen = add_lora(load_model(str(tiny_model_dir), list(LABELS)), 4, train_head=False)
    heads = [n for n, p in trained.named_parameters() if p.requires_grad and "classifier" in n]
    assert heads
    assert not [n for n, p in frozen.named_parameters() if p.requires_grad and "classifier" in n]
    assert [n for n, p in frozen.named_parameters() if p.requires_grad]  # the adapter trains
