import numpy as np
import pytest
import torch


@pytest.mark.slow
def test_full_size_random_vit_b_through_load_sam_and_the_predictor(tmp_path, coffee_rgb, tiny_refiner):
    """The real ViT-B architecture: type read off the checkpoint, loaded weights-only, masks[0] kept."""
    from segment_anything import SamPredictor, sam_model_registry

    from is5net import IS5NetPredictor, load_sam

    torch.manual_seed(0)
    sam = sam_model_registry["vit_b"](checkpoint=None)
    path = tmp_path / "sam_vit_b_random.pth"
    torch.save(sam.state_dict(), path)
    loaded = load_sam(None, path)
    assert loaded.sam_type == "vit_b" and not loaded.training
    assert all(not p.requires_grad for p in loaded.parameters())
    box = [60, 40, 230, 170]
    p = IS5NetPredictor(loaded, tiny_refiner, device="cpu")
    p.set_image(coffee_rgb)
    out = p.predict(box=box)
    ref = SamPredictor(sam.eval())
    ref.set_image(coffee_rgb)
    masks, scores, _ = ref.predict(box=np.array(box), multimask_output=True)
    assert np.array_equal(out.sam_mask, masks[0])
    assert out.sam_score == pytest.approx(float(scores[0]), abs=1e-4)
    assert out.mask.shape == coffee_rgb.shape[:2]
