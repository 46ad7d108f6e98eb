# bash completion for canga.
# Installed as /usr/share/bash-completion/completions/canga; or, in ~/.bashrc:
#   source <(canga completion bash)
# Every TAB runs `canga __complete -- WORD...`, which prints the candidates
# (see docs/completion.md): commands, flags, image names and tags of the
# local repositories, and file names where a file is expected.

_canga() {
	local line=${COMP_LINE:0:COMP_POINT}
	local -a words
	# Blanks split words; quotes are not interpreted.
	read -r -a words <<<"$line"
	if [[ -z $line || $line == *[[:space:]] ]]; then
		words+=("")
	fi
	((${#words[@]} >= 2)) || return 0
	local cur=${words[${#words[@]}-1]}
	local out
	out=$("${words[0]}" __complete -- "${words[@]:1}" 2>/dev/null) || return 0

	# bash splits words at : and = (COMP_WORDBREAKS): what precedes the
	# last of them in cur is typed already and must not be inserted again.
	local pre=""
	if [[ $cur == *[:=]* ]]; then
		pre=${cur%"${cur##*[:=]}"}
	fi
	local c
	COMPREPLY=()
	while IFS= read -r c; do
		case $c in
		:file)
			compopt -o filenames 2>/dev/null
			while IFS= read -r c; do COMPREPLY+=("${c#"$pre"}"); done < <(compgen -f -- "$cur")
			;;
		:dir)
			compopt -o filenames 2>/dev/null
			while IFS= read -r c; do COMPREPLY+=("${c#"$pre"}"); done < <(compgen -d -- "$cur")
			;;
		:nospace) compopt -o nospace 2>/dev/null ;;
		"") ;;
		*)
			c=${c%%$'\t'*}
			COMPREPLY+=("${c#"$pre"}")
			;;
		esac
	done <<<"$out"
	return 0
}

complete -F _canga canga
