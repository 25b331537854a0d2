"""Convert SYSU-MM01 with its visible-infrared evaluation protocol to a Hugging Face dataset with the images embedded.

    python dataset_scripts/convert_sysu_mm01.py /data/SYSU-MM01 --mode all --gallery-shot single --trial 0 --out sysu_mm01_hf
    python dataset_scripts/convert_sysu_mm01.py /data/SYSU-MM01 --mode all --gallery-shot single --trial 0 --out sysu_mm01_pq --format parquet
    python dataset_scripts/convert_sysu_mm01.py /data/SYSU-MM01 --mode all --gallery-shot single --trial 0 --push-to-hub ORG/sysu-mm01

Convert trials 0..9 (--trial) to report the mean over gallery draws.
Run with --help for every option. The reading logic is hf_reid.data.load_reid_dataset("sysu_mm01", ...);
saving, pushing and the dataset card are in hf_reid.data.export.
"""

from hf_reid.data.export import run_converter

if __name__ == "__main__":
    print(run_converter("sysu_mm01", description=__doc__))
