"""Convert CUHK-SYSU person crops (a train-only split) to a Hugging Face dataset with the images embedded.

    python dataset_scripts/convert_cuhk_sysu.py /data/cuhk_sysu --out cuhk_sysu_hf
    python dataset_scripts/convert_cuhk_sysu.py /data/cuhk_sysu --out cuhk_sysu_pq --format parquet
    python dataset_scripts/convert_cuhk_sysu.py /data/cuhk_sysu --push-to-hub ORG/cuhk-sysu

data_dir holds cropped_images/pXXXX_sYYYY_N.jpg.
Run with --help for every option. The reading logic is hf_reid.data.load_reid_dataset("cuhk_sysu", ...);
saving, pushing and the dataset card are in hf_reid.data.export.
"""

from hf_reid.data.export import run_converter

if __name__ == "__main__":
    print(run_converter("cuhk_sysu", description=__doc__))
