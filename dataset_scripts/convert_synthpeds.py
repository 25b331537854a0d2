"""Convert one SynthPeds domain folder written by `hf-reid synth` to a Hugging Face dataset with the images embedded.

    python dataset_scripts/convert_synthpeds.py runs/synthpeds/synthpeds_d0 --out synthpeds_hf
    python dataset_scripts/convert_synthpeds.py runs/synthpeds/synthpeds_d0 --out synthpeds_pq --format parquet
    python dataset_scripts/convert_synthpeds.py runs/synthpeds/synthpeds_d0 --push-to-hub ORG/synthpeds

Run with --help for every option. The reading logic is hf_reid.data.load_reid_dataset("synthpeds", ...);
saving, pushing and the dataset card are in hf_reid.data.export.
"""

from hf_reid.data.export import run_converter

if __name__ == "__main__":
    print(run_converter("synthpeds", description=__doc__))
